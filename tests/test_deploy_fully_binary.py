"""Fully binary networks (seed 003) on the packed runtime: no float layer but the logits' scale.

The thermometer encoding, the offsets folded into integer thresholds (max pools taken on the
accumulators) and ResNet-20's fixed-point residual stream run as integer steps on the kernels'
accumulators; logits must equal PyTorch's eval logits bit for bit (IR-Net's power-of-two weight
scales make PyTorch's float convolutions exact), on every code path the CPU has.
"""
import json

import numpy as np
import pytest
import torch
from torch import nn

from onebit.deploy import export, load
from onebit.deploy.export import build_program
from onebit.deploy.golden import write_golden
from onebit.deploy.ops import level_step, sign_step
from onebit.models import create_model
from onebit.models.fully_binary import Offset
from test_deploy_kernels import kernel  # noqa: F401  (every code path x layout the CPU runs)

from helpers import fit_batch

pytestmark = pytest.mark.usefixtures("one_thread")

# what a fully binary graph may compute besides binary layers: integer steps, moves of their values,
# pools (max of integers, mean of fixed-point values only read through its sign) and the logits' scale
INTEGER = {"onebit.thermometer", "onebit.sign_step", "onebit.level_step", "max_pool2d", "adaptive_avg_pool2d",
           "getitem", "pad", "flatten"}


def offsets(model: nn.Module, spread: float, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, Offset):
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=g) * spread)
    return model.eval()


def only_the_logit_scale_is_float(program) -> None:
    """Every float call is an integer step, a move or the final ``logits * (gain * scale)``."""
    nodes = {n["name"]: n for n in program.nodes}
    output = nodes[next(n for n in program.nodes if n["op"] == "output")["inputs"][0]]
    scale = {output["name"]} | {a["node"] for a in output["args"] if isinstance(a, dict) and "node" in a}
    for n in program.nodes:
        if n["op"] in ("call", "method") and n["name"] not in scale:
            assert n["fn"] in INTEGER, n
        assert not n.get("float_binary_layer"), n


@pytest.mark.parametrize("name,pad_value", [("resnet20_fb_1w1a", 1.0), ("resnet20_fb_1w1a", 0.0),
                                            ("vgg_small_fb_1w1a", 1.0), ("alexnet_fb_1w1a", 0.0)])
def test_fully_binary_models_match_pytorch_exactly(kernel, tmp_path, name, pad_value):
    model = offsets(create_model(name, 10, method="irnet", pad_value=pad_value), spread=1.0)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    program = export(model, x[:1], tmp_path / "fb.onebit", check=False)
    only_the_logit_scale_is_float(program)
    steps = [n for n in program.nodes if "step_of" in n]
    kinds = {n["fn"] for n in steps}
    assert kinds == ({"onebit.level_step"} if name.startswith("resnet") else {"onebit.sign_step"})
    runtime = load(tmp_path / "fb.onebit")
    assert "integer steps" in runtime.summary()
    with torch.no_grad():
        assert torch.equal(runtime(x), model(x))
        assert torch.equal(load(tmp_path / "fb.onebit", batch_chunk=1)(x), model(x))  # the steps are per sample


def test_trained_fully_binary_resnet_and_vgg_match_pytorch(tmp_path):
    """After a few Adam steps on digits (offsets, weights and the residual stream away from their
    initial values), the exported file still gives PyTorch's logits exactly."""
    from onebit.data import build_data

    torch.manual_seed(0)
    data = build_data("digits", batch_size=64)
    data.train.set_epoch(0, 0)
    x, y = next(iter(data.train))
    for name in ("resnet20_fb_1w1a", "vgg_small_fb_1w1a"):
        model = fit_batch(create_model(name, 10, in_channels=1, image_size=8, method="irnet", pad_value=1), x, y,
                          steps=15, lr=0.01)
        model.eval()
        assert any(m.bias.abs().max() > 0.05 for m in model.modules() if isinstance(m, Offset))
        export(model, x[:1], tmp_path / f"{name}.onebit", check=False)
        with torch.no_grad():
            assert torch.equal(load(tmp_path / f"{name}.onebit")(x), model(x)), name


def test_steps_against_their_formulas():
    # sign_step: +1 where (x >= t) != flip
    x = torch.tensor([-3.0, -1.0, 0.0, 2.0]).view(1, 1, 1, 4).expand(1, 2, 1, 4).contiguous()
    t, flip = torch.tensor([[0, -1]], dtype=torch.int32), torch.tensor([[0, 1]], dtype=torch.uint8)
    got = sign_step(x, t, flip)
    assert got[0, 0, 0].tolist() == [-1, -1, 1, 1] and got[0, 1, 0].tolist() == [1, -1, -1, -1]
    # level_step: clamp(base[c] + #{j: x >= t[c, j]} + levels * residual, low, high) / levels
    base = torch.tensor([-40, 1], dtype=torch.int32)
    t = torch.tensor([[-1] * 37 + [0] * 3 + [1] * 5 + [2] * 35, [-1, 0, 1, 2] + [3] * 76], dtype=torch.int32)
    acc = torch.tensor([-2.0, -1.0, 1.0, 2.0]).view(1, 1, 1, 4).expand(2, 2, 1, 4).contiguous()
    residual = torch.full((2, 2, 1, 4), 0.25)
    got = level_step(acc, base, t, 16, -16, 16, residual)
    assert got[1, 0, 0].tolist() == [-1.0, (-3 + 4) / 16, (5 + 4) / 16, 1.0]
    assert got[1, 1, 0].tolist() == [5 / 16, 6 / 16, 8 / 16, 9 / 16] and torch.equal(got[0], got[1])


def test_golden_vectors_agree_with_the_runtime(tmp_path):
    """The runtime's accumulators and the bits its integer steps produce are the golden vectors
    written from the training graph, layer by layer."""
    model = offsets(create_model("resnet20_fb_1w1a", 10, method="irnet", pad_value=1.0), spread=0.5, seed=3)
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    index = write_golden(model, x, tmp_path / "g")
    export(model, x, tmp_path / "fb.onebit", check=False)
    runtime = load(tmp_path / "fb.onebit")
    values = runtime.intermediates(x)
    program = build_program(model, x)
    steps = {n["step_of"]: n for n in program.nodes if "step_of" in n}
    layers = {entry["name"].replace(".", "_"): i for i, entry in enumerate(index["layers"])}
    golden = lambda f: np.load(tmp_path / "g" / f)  # noqa: E731
    assert np.array_equal(values[next(n["name"] for n in program.nodes if n.get("fn") == "onebit.thermometer")],
                          golden(index["encoding"]["bits"]))
    checked = 0
    for conv, step in steps.items():
        entry = index["layers"][layers[conv]]
        assert np.array_equal(values[conv].numpy().astype(np.int32), golden(entry["accumulator"])), conv
        following = index["layers"][layers[conv] + 1]
        if following["kind"] == "conv2d":  # the next layer reads the sign of the step's output
            bits = np.where(values[step["name"]].numpy() >= 0, 1, -1)
            assert np.array_equal(bits, golden(following["input_bits"])), conv
            checked += 1
    assert checked == 9  # the stem and every block's second conv but the last (first convs write bits only)
    assert np.array_equal(values[program.nodes[-1]["inputs"][0]].numpy(), golden(index["logits"]))


def test_onebit_export_command_writes_a_fully_binary_file(tmp_path, capsys):
    from onebit.deploy.commands import export as command

    class Args:
        checkpoint, model, dataset, input_size, no_check = None, "vgg_small_fb_1w1a", "cifar10", None, False
        output, golden = str(tmp_path / "fb.onebit"), str(tmp_path / "g")

    assert command.main(Args) == 0
    out = capsys.readouterr().out
    assert "integer steps" in out and "top-1 agrees" in out and "max relative logit difference 0.00e+00" in out
    assert json.loads((tmp_path / "g" / "index.json").read_text())["layers"]


def test_level_step_without_clamp_and_with_a_residual(tmp_path):
    """A fixed-point stream that is not clamped, read as values by the output: still exact."""
    from onebit.layers import FixedPoint, ThermometerEncoding
    from onebit.models.common import BinaryLayers

    class Stream(nn.Module):
        def __init__(self):
            super().__init__()
            layers = BinaryLayers("irnet", pad_value=1.0)
            self.encode, self.fix1, self.fix2 = ThermometerEncoding(), FixedPoint(8), FixedPoint(8)
            self.conv1, self.off1 = layers.conv(9, 8, 3, 1, 1), Offset(8, 81)
            self.conv2, self.off2 = layers.conv(8, 8, 3, 1, 1), Offset(8, 72)

        def forward(self, x):
            x = self.fix1(self.off1(self.conv1(self.encode(x))))
            return (self.fix2(self.off2(self.conv2(x))) + x).flatten(1)

    model = offsets(Stream(), spread=2.0)
    x = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(5))
    program = export(model, x[:1], tmp_path / "s.onebit", check=False)
    steps = [n for n in program.nodes if "step_of" in n]
    assert [n["fn"] for n in steps] == ["onebit.level_step"] * 2 and steps[1]["args"][3:6] == [8, None, None]
    with torch.no_grad():
        expected = model(x)
    assert (expected.abs() > 1).any()  # unclamped
    assert torch.equal(load(tmp_path / "s.onebit")(x), expected)
