"""``onebit.summary`` / ``onebit summary``: counts against the formulas and the published BOPs/FLOPs/OPs.

Published values (Bi-Real / ReActNet papers, 224x224, batch 1), given to 4 significant digits, checked on the registered models.
"""
from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

import onebit
from onebit.analysis import summary
from onebit.cli import main as onebit_main
from onebit.layers import BinaryConv2d, BinaryLinear
from onebit.models import create_model
from onebit.quant import Quantizer, sign



def close_to_published(value, published, digits=4):
    """``value`` rounds to ``published`` at ``digits`` significant digits."""
    unit = 10 ** (math.floor(math.log10(published)) - digits + 1)
    return abs(value - published) <= unit / 2


# --------------------------------------------------------------------------------- published numbers
PUBLISHED = {  # BOPs, FLOPs, OPs at 224x224 (the papers' tables); FLOPs exact = stem + downsample 1x1s + FC
    "resnet18": (1.676e9, 7 * 7 * 3 * 64 * 112**2 + 3 * (64 * 128 * 28**2) + 512 * 1000, 1.640e8),
    "resnet34": (3.526e9, 7 * 7 * 3 * 64 * 112**2 + 3 * (64 * 128 * 28**2) + 512 * 1000, 1.929e8),
    "reactnet_a": (4.817e9, 3 * 3 * 3 * 32 * 112**2 + 1024 * 1000, 0.871e8),
}
MODELS = {  # registered models of each published architecture; the ImageNet resnet*_1w1a (image_size 224)
    # are the Bi-Real-block ResNets of RBNN/IR-Net, reactnet_r18 is Bi-Real-18 with RSign/RPReLU
    "resnet18": ["birealnet18", "resnet18_1w1a", "reactnet_r18"],
    "resnet34": ["birealnet34", "resnet34_1w1a"],
    "reactnet_a": ["reactnet_a"],
}


def check_published(totals, arch):
    bops, flops, ops = PUBLISHED[arch]
    assert close_to_published(totals["bops"], bops), (arch, totals["bops"])
    assert totals["flops"] == flops
    assert close_to_published(totals["ops"], ops, digits=3 if arch == "reactnet_a" else 4), (arch, totals["ops"])
    assert totals["ops"] == totals["flops"] + totals["bops"] / 64


# Counts depend on shapes only, so these big models are built on the meta device (no memory,
# no arithmetic: the forward pass only propagates shapes); the CLI test below runs a real forward.
@pytest.mark.parametrize("arch,name", [(a, n) for a, names in sorted(MODELS.items()) for n in names])
def test_published_counts_of_the_registered_models(arch, name):
    with torch.device("meta"):
        model = create_model(name, 1000, image_size=224)
    check_published(summary(model, (1, 3, 224, 224)).totals, arch)


def test_parameter_counts_match_published_and_model_parameters():
    resnet20 = create_model("resnet20_1w1a", 10)
    s20 = summary(resnet20, (1, 3, 32, 32))
    assert round(s20.totals["params"] / 1e6, 2) == 0.27
    with torch.device("meta"):
        resnet18 = create_model("birealnet18", 1000)
    s18 = summary(resnet18, (1, 3, 224, 224))
    assert round(s18.totals["params"] / 1e6, 1) == 11.7
    for model, s in ((resnet20, s20), (resnet18, s18)):
        assert s.totals["params"] == sum(p.numel() for p in model.parameters())
    # Bi-Real-18: 1-bit = the 16 binary 3x3 convs of ResNet-18, everything else float
    binary_3x3 = 9 * (4 * 64 * 64 + (128 * 64 + 3 * 128 * 128) + (256 * 128 + 3 * 256**2) + (512 * 256 + 3 * 512**2))
    assert s18.totals["params_by_bits"] == {1: binary_3x3, 32: s18.totals["params"] - binary_3x3}


# ------------------------------------------------------------------------------- rules, by formula
class ThresholdSign(Quantizer):
    """1-bit input quantizer with a learned per-channel threshold and a training-only buffer."""

    def build(self, layer):
        self.threshold = nn.Parameter(torch.zeros(layer.in_channels))
        self.register_buffer("rotation", torch.eye(4))

    def forward(self, x):
        return sign(x - self.threshold.view(1, -1, 1, 1))


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv0 = nn.Conv2d(3, 8, 3, padding=1, bias=True)
        self.bconv = BinaryConv2d(8, 16, 3, stride=2, padding=1, groups=2, input_quantizer=ThresholdSign())
        self.bn = nn.BatchNorm2d(16)
        self.act = nn.PReLU()  # called twice
        self.fc_w = BinaryLinear(144, 10, bias=True, input_quantizer=None)  # binary weights only
        self.fc_a = BinaryLinear(10, 4, weight_quantizer=None)  # binary activations only
        self.unused = nn.Linear(2, 2)

    def forward(self, x):
        x = self.act(self.bn(self.bconv(self.act(self.conv0(x)))))
        return self.fc_a(self.fc_w(x.flatten(1)))


def test_counts_follow_the_formulas():
    model = Tiny().train()
    running_mean = model.bn.running_mean.clone()
    s = summary(model, (1, 3, 6, 6))
    rows = {r.name: r for r in s.layers}
    assert [r.name for r in s.layers] == ["conv0", "act", "bconv", "bn", "fc_w", "fc_a", "unused"]  # run order

    conv0 = rows["conv0"]  # float conv: C_out*H*W * C_in*kh*kw
    assert (conv0.output_shape, conv0.flops, conv0.bops) == ((1, 8, 6, 6), 8 * 36 * 3 * 9, 0)
    assert conv0.params == {32: 8 * 27 + 8}
    bconv = rows["bconv"]  # groups=2, stride 2: 16*3*3 outputs x (8/2)*3*3 binary MACs
    assert (bconv.input_bits, bconv.weight_bits, bconv.bops, bconv.flops) == (1, 1, 16 * 9 * 4 * 9, 0)
    assert bconv.params == {1: 16 * 4 * 9, 32: 8}  # quantizer threshold = float param of the layer; buffer not counted
    assert rows["act"].calls == 2 and rows["act"].params == {32: 1}
    assert rows["bn"].params == {32: 32} and rows["bn"].input_bits is None
    fc_w, fc_a = rows["fc_w"], rows["fc_a"]  # one-sided binary layers: float MACs
    assert (fc_w.input_bits, fc_w.weight_bits, fc_w.bops, fc_w.flops) == (32, 1, 0, 1440)
    assert fc_w.params == {1: 1440, 32: 10}
    assert (fc_a.input_bits, fc_a.weight_bits, fc_a.bops, fc_a.flops) == (1, 32, 0, 40)
    assert fc_a.params == {32: 40}
    assert rows["unused"].output_shape is None and rows["unused"].params == {32: 6}

    t = s.totals
    n_float = 224 + 8 + 1 + 32 + 10 + 40 + 6
    assert t["params_by_bits"] == {1: 576 + 1440, 32: n_float}
    assert t["params"] == sum(p.numel() for p in model.parameters())
    assert t["memory_bytes"] == (576 + 1440 + 32 * n_float) / 8
    assert t["compression"] == pytest.approx(32 * t["params"] / (576 + 1440 + 32 * n_float))
    assert (t["bops"], t["flops"]) == (5184, 7776 + 1440 + 40)
    assert t["binary_mac_fraction"] == pytest.approx(5184 / (5184 + 9256))
    # the model is left as it was: training mode, BN statistics, no hooks
    assert model.training and torch.equal(model.bn.running_mean, running_mean)
    assert all(not m._forward_hooks for m in model.modules())


def test_ienet_counts_both_branches():
    """IE-Net's binary conv multiplies the two shifted copies of its input: twice BNN's binary MACs."""
    ienet = summary(create_model("resnet20_1w1a", 10, method="ienet"), (1, 3, 32, 32)).totals
    bnn = summary(create_model("resnet20_1w1a", 10, method="bnn"), (1, 3, 32, 32)).totals
    assert ienet["bops"] == 2 * bnn["bops"] > 0 and ienet["flops"] == bnn["flops"]


@pytest.mark.parametrize("binary_type", [(False, True), (True, False)])
def test_one_sided_binary_models_count_float_macs(binary_type):
    full = summary(create_model("resnet20_1w1a", 10), (1, 3, 32, 32)).totals
    side = summary(create_model("resnet20_1w1a", 10, binary_type=binary_type), (1, 3, 32, 32)).totals
    assert full["bops"] > 0 and side["bops"] == 0
    assert side["flops"] == full["flops"] + full["bops"]
    assert side["ops"] == side["flops"]
    weights_binary = binary_type[1]
    assert side["params_by_bits"].get(1, 0) == (full["params_by_bits"][1] if weights_binary else 0)


def test_texts_and_json():
    s = summary(create_model("resnet20_1w1a", 10), (1, 3, 32, 32))
    table = s.table()
    assert table.splitlines()[0].split()[:4] == ["Layer", "Output", "shape", "In"]
    assert "layers.8.conv2" in table and table.splitlines()[-1].startswith("Total")
    text = s.totals_text()
    assert f"{s.totals['compression']:.1f}x smaller" in text and "OPs = FLOPs + BOPs/64" in text
    assert str(s) == f"{table}\n\n{text}"
    d = json.loads(json.dumps(s.to_dict()))
    assert d["totals"]["params_by_bits"] == {str(b): n for b, n in s.totals["params_by_bits"].items()}
    assert [layer["name"] for layer in d["layers"]] == [r.name for r in s.layers]
    assert d["input_size"] == [1, 3, 32, 32]
    float_only = summary(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), (1, 4))
    assert "(no compression)" in float_only.totals_text() and float_only.totals["compression"] == 1.0


def test_bad_input_sizes_are_clear_errors():
    model = create_model("resnet20_1w1a", 10)
    with pytest.raises(ValueError, match="batch 1"):
        summary(model, (3, 32, 32))
    with pytest.raises(ValueError, match=r"input of size \(1, 5, 32, 32\)"):
        summary(model, (1, 5, 32, 32))


def test_exported_from_the_package():
    assert onebit.summary is summary


# ---------------------------------------------------------------------------------------------- CLI
def run_cli(capsys, *argv):
    code = onebit_main(["summary", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_registered_model(capsys):
    code, out, _ = run_cli(capsys, "--model", "resnet20_1w1a", "--dataset", "cifar100", "--json")
    assert code == 0
    d = json.loads(out)
    expected = summary(create_model("resnet20_1w1a", 100), (1, 3, 32, 32)).to_dict()
    assert d["model"] == "resnet20_1w1a" and d["totals"] == expected["totals"]
    code, out, _ = run_cli(capsys, "--model", "vgg_small_1w1a", "--dataset", "mnist", "--input_size", "32")
    assert code == 0 and "input 1x32x32" in out and "x smaller" in out and out.count("features.") == 10  # 5 binary convs + 5 BN


def test_cli_reactnet_a_on_imagenet(capsys):
    code, out, _ = run_cli(capsys, "--model", "reactnet_a", "--dataset", "imagenet", "--json")
    assert code == 0
    check_published(json.loads(out)["totals"], "reactnet_a")


def test_cli_checkpoint(tmp_path, capsys):
    model = create_model("resnet20_1w1a", 10, in_channels=1, image_size=28, method="bnn", binary_type=(False, True))
    path = tmp_path / "model_best.pth"
    config = {"model": "resnet20_1w1a", "dataset": "fashion-mnist", "method": "bnn", "a32": True}  # W1A32
    torch.save({"model": model.state_dict(), "config": config}, path)
    code, out, _ = run_cli(capsys, "--checkpoint", str(path), "--json")
    assert code == 0
    totals = json.loads(out)["totals"]
    assert totals == summary(model, (1, 1, 28, 28)).to_dict()["totals"] and totals["bops"] == 0

    wrong = tmp_path / "wrong.pth"
    torch.save({"model": model.state_dict(), "config": {**config, "model": "resnet18_1w1a"}}, wrong)
    code, _, err = run_cli(capsys, "--checkpoint", str(wrong))
    assert code == 2 and "does not fit model resnet18_1w1a" in err
    code, _, err = run_cli(capsys, "--checkpoint", str(tmp_path / "missing.pth"))
    assert code == 2 and "checkpoint not found" in err
    torch.save(model.state_dict(), tmp_path / "bare.pth")
    code, _, err = run_cli(capsys, "--checkpoint", str(tmp_path / "bare.pth"))
    assert code == 2 and "'model' (state_dict) and 'config'" in err
