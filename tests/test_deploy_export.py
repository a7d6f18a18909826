"""Exported ``.onebit`` models against the same networks in PyTorch eval mode.

Random weights, random BatchNorm statistics and random inputs. Binary weights get a power-of-two
magnitude per output channel, so that PyTorch's own float convolution of +-1 activations is exact
and the exported integer pipeline must reproduce its logits bit for bit (for arbitrary scales
PyTorch's float sums are themselves rounded, and a value within one rounding of a sign threshold
may flip). Every code path is checked, the portable one included.
"""
import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from torch import nn

from onebit.deploy import ExportError, export, kernels, load
from onebit.deploy.export import compare_logits
from onebit.layers import BinaryConv2d, BinaryLinear
from onebit.models import create_model
from test_deploy_kernels import kernel  # noqa: F401  (every code path x layout the CPU runs)

from helpers import randomize




def roundtrip(model, x, tmp_path, name="m.onebit"):
    path = tmp_path / name
    export(model, x[:1], path, check=False)
    with torch.no_grad():
        expected = model(x)
    before = x.clone()
    got = load(path)(x)
    assert torch.equal(x, before)  # the runtime writes outputs over dead residuals, never over its input
    return got, expected


@pytest.mark.parametrize("name,side,channels", [
    ("resnet20_1w1a", 32, 3), ("cnn_small_1w1a", 8, 1), ("vgg_small_1w1a", 16, 3),
])
def test_cifar_models_match_pytorch_exactly(kernel, tmp_path, name, side, channels):
    model = randomize(create_model(name, 10, in_channels=channels, image_size=side), seed=1)
    got, expected = roundtrip(model, torch.randn(8, channels, side, side), tmp_path)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("name", ["birealnet18", "reactnet_a", "resnet20_bireal_1w1a", "mobilenetv1_bireal_025_1w1a",
                                  "resnet18_1w1a"])
def test_zoo_models_match_pytorch(tmp_path, name):
    """Bi-Real (scaled weights), ReActNet-A (RSign thresholds, RPReLU, learnable biases), RBNN
    (per-sample mean thresholds, rotated weights), binary depthwise convs, binary 1x1 stride-2
    shortcuts reading the same input as the block's first conv (ResNet-18 CIFAR)."""
    side = 16 if name == "resnet18_1w1a" else 32
    model = randomize(create_model(name, 10, image_size=side), seed=2)
    got, expected = roundtrip(model, torch.randn(4, 3, side, side), tmp_path)
    diff = compare_logits(got, expected)
    assert diff["max_rel"] <= 1e-4 and diff["top1_agree"] == 1.0, diff


def test_plus_one_padding_and_forced_scalar_path(tmp_path):
    model = randomize(create_model("resnet20_1w1a", 10, pad_value=1.0), seed=3)
    x = torch.randn(6, 3, 32, 32)
    export(model, x[:1], tmp_path / "m.onebit")
    with torch.no_grad():
        expected = model(x)
    runtime = load(tmp_path / "m.onebit")
    try:
        kernels.set_kernel("scalar")
        assert torch.equal(runtime(x), expected)
    finally:
        kernels.set_kernel("auto")
    assert torch.equal(runtime(x), expected)


def test_stem_max_pool_runs_before_its_batch_norm():
    """The runtime pools a ResNet stem's BatchNorm input first (monotonic rounding, min where alpha < 0)."""
    from onebit.deploy.ops import batch_norm_affine
    from onebit.deploy.runtime import _fuse, _max_pool_of_batch_norm

    x = torch.randn(2, 5, 11, 12) * 5
    x[0, 0, 0, 0], x[1, 1, 4, 4], x[1, 3, 2, 2] = float("nan"), float("inf"), float("-inf")
    affine = torch.tensor([[1.5, -0.7, 0.0, 2.0, -3.0], [0.1, -0.2, 0.3, 0.0, 1.0]])
    expected = torch.nn.functional.max_pool2d(batch_norm_affine(x, affine), 3, 2, 1)
    for layout in (torch.contiguous_format, torch.channels_last):  # the stem conv's output may be NHWC
        got = _max_pool_of_batch_norm(x.contiguous(memory_format=layout), affine, 3, 2, 1)
        assert got.is_contiguous()
        assert torch.equal(got.isnan(), expected.isnan()) and torch.equal(got.nan_to_num(), expected.nan_to_num())
    # the graph rewrite (end to end: test_zoo_models_match_pytorch[birealnet18], whose stem BN has both signs)
    nodes = [{"name": "x", "op": "input"},
             {"name": "bn", "op": "call", "fn": "onebit.batch_norm_affine", "args": [{"node": "x"}, {"tensor": "a"}]},
             {"name": "pool", "op": "call", "fn": "max_pool2d", "args": [{"node": "bn"}, 3, 2, 1, 1, False]},
             {"name": "out", "op": "output", "inputs": ["pool"]}]
    assert [(n["name"], n.get("fn")) for n in _fuse(nodes)] == [("x", None), ("pool", "runtime.max_pool_of_batch_norm"),
                                                                ("out", None)]
    nodes.insert(3, {"name": "other", "op": "call", "fn": "relu", "args": [{"node": "bn"}]})  # bn read twice
    assert _fuse(nodes) == nodes
    # a conv read only by the fused BN and pool joins them; one read only by a pool computes channels-last
    conv = {"name": "conv", "op": "call", "fn": "conv2d", "args": [{"node": "x"}, {"tensor": "w"}, None, 2, 3, 1, 1]}
    nodes = [nodes[0], conv, {**nodes[1], "args": [{"node": "conv"}, {"tensor": "a"}]}, nodes[2], nodes[4]]
    fused = _fuse(nodes)
    assert [n.get("fn") for n in fused] == [None, "runtime.conv_batch_norm_pool", None]
    assert fused[1]["args"] == [*conv["args"], {"tensor": "a"}, 3, 2, 1, 1, False]
    nodes = [nodes[0], conv, {**nodes[3], "args": [{"node": "conv"}, 3, 2, 1, 1, False]}, nodes[4]]
    assert [n.get("fn") for n in _fuse(nodes)] == [None, "runtime.channels_last_conv2d", "max_pool2d", None]
    # a downsampling shortcut: avg_pool2d -> 1x1 conv2d -> batch_norm_affine, each read only by the next, one step
    pool = {"name": "pool", "op": "call", "fn": "avg_pool2d", "args": [{"node": "x"}, 2, 2, 0, True, False, None]}
    conv = {**conv, "args": [{"node": "pool"}, {"tensor": "w"}]}
    nodes = [nodes[0], pool, conv, {"name": "bn", "op": "call", "fn": "onebit.batch_norm_affine",
                                    "args": [{"node": "conv"}, {"tensor": "a"}]}, {"name": "out", "op": "output", "inputs": ["bn"]}]
    fused = _fuse(nodes)
    assert [(n["name"], n.get("fn")) for n in fused] == [("x", None), ("bn", "runtime.avg_pool_conv_batch_norm"), ("out", None)]
    assert fused[1]["args"] == [{"node": "x"}, {"tensor": "w"}, None, 1, 0, 1, 1, {"tensor": "a"}, 2, 2, 0, True, False, None]
    nodes.insert(4, {"name": "other", "op": "call", "fn": "relu", "args": [{"node": "pool"}]})  # pool read twice
    assert [n.get("fn") for n in _fuse(nodes)] == [None, "avg_pool2d", "runtime.conv_batch_norm", "relu", None]


def test_channels_last_stem_conv_equals_nchw_or_is_not_used():
    """The stem conv runs channels-last only where that gives PyTorch's NCHW results bit for bit."""
    from onebit.deploy.runtime import _CHANNELS_LAST_EXACT, _channels_last_conv2d

    x, w = torch.randn(2, 3, 40, 40), torch.randn(16, 3, 7, 7)
    got = _channels_last_conv2d(x, w, None, 2, 3, 1, 1)
    assert torch.equal(got, torch.nn.functional.conv2d(x, w, None, 2, 3))
    exact = [v for k, v in _CHANNELS_LAST_EXACT.answers.items() if k[0] == (2, 3, 40, 40)]
    assert exact == [0 if got.is_contiguous(memory_format=torch.channels_last) and not got.is_contiguous() else None]


class ResidualIsInput(nn.Module):
    """A binary conv whose residual is the model's input (never to be overwritten) and one whose
    residual is also read later (not dead when the conv runs)."""

    def __init__(self):
        super().__init__()
        self.conv1 = BinaryConv2d(8, 8, 3, padding=1, input_quantizer="ste_sign", weight_quantizer="ste_sign")
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = BinaryConv2d(8, 8, 3, padding=1, input_quantizer="ste_sign", weight_quantizer="ste_sign")
        self.bn2 = nn.BatchNorm2d(8)

    def forward(self, x):
        y = self.bn1(self.conv1(x)) + x
        z = self.bn2(self.conv2(y)) + y
        return z + y


def test_outputs_overwrite_only_dead_residuals(tmp_path):
    model = randomize(ResidualIsInput(), seed=9)
    got, expected = roundtrip(model, torch.randn(2, 8, 10, 10), tmp_path)  # checks that x is unchanged
    assert torch.equal(got, expected)
    from onebit.deploy.ops import FUNCTIONS
    from onebit.deploy.runtime import _FRESH_CALLS, _FUSED

    assert _FRESH_CALLS <= set(FUNCTIONS) | set(_FUSED)  # names that drift from the ops would never match


def test_file_is_safetensors_with_a_json_graph(tmp_path):
    model = randomize(create_model("resnet20_1w1a", 10, method="bnn"), seed=4)
    path = tmp_path / "r20.onebit"
    program = export(model, torch.randn(1, 3, 32, 32), path)
    assert program.check == {"max_rel": 0.0, "top1_agree": 1.0}
    with safe_open(str(path), "np") as f:
        graph = json.loads(f.metadata()["onebit"])
        binary = [n for n in graph["nodes"] if n["op"] == "binary_conv2d"]
        words = f.get_tensor(binary[0]["name"] + ".weight")
    assert graph["format"] == "onebit" and graph["model"]["name"] == "resnet20_1w1a"
    assert len(binary) == 18 and words.dtype == np.uint64 and words.shape == (16, 3, 3, 1)
    # conv1 -> bn1 -> hardtanh -> conv2 of every block exchanges bits (LCE's bit-packed output)
    assert sum("bits_for" in n["attrs"] for n in binary) == 9
    assert path.read_bytes()[:8] != b"\x80\x02\x80\x03"[:8] and b"pickle" not in path.read_bytes()[:4096]


def test_numpy_in_numpy_out(tmp_path):
    model = randomize(create_model("cnn_small_1w1a", 10, in_channels=1, image_size=8))
    export(model, torch.randn(1, 1, 8, 8), tmp_path / "m.onebit")
    x = np.random.default_rng(0).standard_normal((5, 1, 8, 8)).astype(np.float32)
    got = load(tmp_path / "m.onebit")(x)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    assert isinstance(got, np.ndarray) and np.array_equal(got, expected)


class LinearNet(nn.Module):
    """Binary linear layers (batch as GEMM rows), BN1d folding, and RBNN's per-sample thresholds."""

    def __init__(self):
        super().__init__()
        self.flat = nn.Flatten()
        self.fc1 = BinaryLinear(48, 70, input_quantizer="ste_sign", weight_quantizer="ste_sign")
        self.bn1 = nn.BatchNorm1d(70)
        self.fc2 = BinaryLinear(70, 33, input_quantizer="rbnn_input", weight_quantizer="magnitude_aware_sign")
        self.fc3 = nn.Linear(33, 5)

    def forward(self, x):
        return self.fc3(self.fc2(self.bn1(self.fc1(self.flat(x)))))


def test_binary_linear_layers(kernel, tmp_path):
    model = randomize(LinearNet(), seed=5)
    got, expected = roundtrip(model, torch.randn(9, 3, 4, 4), tmp_path)
    diff = compare_logits(got, expected)
    assert diff["max_rel"] <= 1e-6 and diff["top1_agree"] == 1.0


def test_one_sided_binary_layers_run_in_float(tmp_path):
    model = randomize(create_model("resnet20_1w1a", 10, method="bnn", binary_type=(False, True)), seed=6)
    got, expected = roundtrip(model, torch.randn(4, 3, 32, 32), tmp_path)
    assert compare_logits(got, expected)["max_rel"] <= 1e-5
    assert "18 binary layers run as float" in load(tmp_path / "m.onebit").summary()


@pytest.mark.parametrize("side,binary", [(kernels.constant("max_kernel_side"), 1), (kernels.constant("max_kernel_side") + 1, 0)])
def test_kernels_beyond_the_c_limits_run_in_float(tmp_path, side, binary):
    conv = BinaryConv2d(4, 8, (1, side), bias=False)
    model = randomize(nn.Sequential(nn.BatchNorm2d(4), conv, nn.Flatten()), seed=7)
    got, expected = roundtrip(model, torch.randn(2, 4, 1, side + 2), tmp_path)
    assert compare_logits(got, expected)["max_rel"] <= 1e-5
    summary = load(tmp_path / "m.onebit").summary()
    assert ("1 binary layers run as float" in summary) == (not binary)


def test_unexportable_models_name_the_problem(tmp_path):
    dorefa = create_model("resnet20_1w1a", 10, method="dorefa")  # {0, 1} activations
    with pytest.raises(ExportError, match="cannot export quantizer dorefa_input"):
        export(dorefa, torch.randn(1, 3, 32, 32), tmp_path / "d.onebit")

    class DataDependent(nn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x

    with pytest.raises(ExportError, match="cannot trace"):
        export(DataDependent(), torch.randn(1, 3, 4, 4), tmp_path / "t.onebit")


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no exported model"):
        load(tmp_path / "missing.onebit")
    (tmp_path / "junk.onebit").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a .onebit file"):
        load(tmp_path / "junk.onebit")
    from safetensors.numpy import save_file

    save_file({"a": np.zeros(2, dtype=np.float32)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not an exported onebit model"):
        load(tmp_path / "other.safetensors")
    model = randomize(create_model("cnn_small_1w1a", 10, in_channels=1, image_size=8))
    export(model, torch.randn(1, 1, 8, 8), tmp_path / "m.onebit")
    with pytest.raises(ValueError, match="expected an N x 1 x H x W"):
        load(tmp_path / "m.onebit")(torch.randn(2, 3, 8, 8))
    from onebit.deploy import fileformat

    graph, tensors = fileformat.read(tmp_path / "m.onebit")
    for version, readable in ((1, True), (3, False)):  # a file from before the "pre" role reads; a newer one not
        fileformat.save(tmp_path / "v.onebit", {**graph, "version": version}, tensors)
        if readable:
            load(tmp_path / "v.onebit")
        else:
            with pytest.raises(ValueError, match="unsupported onebit file version 3"):
                load(tmp_path / "v.onebit")


def test_rbnn_gain_is_rounded_before_the_batch_norm(kernel, tmp_path):
    """RBNN's per-channel weight gain (not a power of two) scales the integer dot product in float32 before
    the BatchNorm, as PyTorch does (the file's ``pre``, version 2): logits bit for bit PyTorch's."""
    model = randomize(create_model("resnet20_1w1a", 10, method="rbnn"), seed=3)
    g = torch.Generator().manual_seed(3)
    for name, p in model.named_parameters():
        if name.endswith(".alpha"):  # randomize's are powers of two
            p.data = torch.rand(p.shape, generator=g) + 0.5
    got, expected = roundtrip(model, torch.randn(4, 3, 32, 32), tmp_path)
    assert torch.equal(got, expected)
    with safe_open(str(tmp_path / "m.onebit"), "np") as f:
        assert json.loads(f.metadata()["onebit"])["version"] == 2 and any(k.endswith(".pre") for k in f.keys())


def test_cli_export_infer_bench_from_a_checkpoint(tmp_path, capsys):
    """A checkpoint as the training engine writes it: {'model': state_dict, 'config': {...}}."""
    from onebit.cli import main

    model = randomize(create_model("cnn_small_1w1a", 10, in_channels=1, image_size=8, method="bnn"), seed=7)
    ckpt = tmp_path / "model_best.pth"
    torch.save({"model": model.state_dict(), "config": {"model": "cnn_small_1w1a", "dataset": "digits", "method": "bnn"}}, ckpt)
    out = tmp_path / "m.onebit"

    def onebit(*argv):
        code = main([str(a) for a in argv])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    code, stdout, stderr = onebit("export", ckpt, "-o", out)
    assert code == 0, stderr
    assert "max relative logit difference 0.00e+00" in stdout
    code, stdout, stderr = onebit("infer", out, "--dataset", "digits", "--compare", ckpt)
    assert code == 0, stderr
    assert "top-1 differs on 0 of 360 images" in stdout
    code, stdout, stderr = onebit("bench", out, "--repeat", "1", "--batches", "1", "--threads", "1")
    assert code == 0 and "speedup" in stdout, stderr
    code, stdout, stderr = onebit("infer", tmp_path / "none.onebit", "--dataset", "digits")
    assert code == 2 and "no exported model" in stderr


def test_binary_conv_chains_run_image_by_image_with_the_same_values(kernel, tmp_path):
    """Bi-Real's runs of binary convs passing bits go image by image at batch > 1 (float steps stay batched);
    with +-1 weights the logits are PyTorch's on the whole batch, the stem (7x7 conv, BN, max pool) included."""
    model = randomize(create_model("birealnet18", 10, image_size=32, method="bnn"), seed=5)
    got, expected = roundtrip(model, torch.randn(3, 3, 32, 32), tmp_path)
    assert torch.equal(got, expected)
    by_image, batched = load(tmp_path / "m.onebit"), load(tmp_path / "m.onebit")
    assert list(by_image._chains.items()) == [(1, 5), (6, 10), (11, 15), (16, 20)]  # the 4 stages' 4 convs
    batched._chains = {}
    x = torch.randn(3, 3, 32, 32)
    assert torch.equal(by_image(x), batched(x))


def test_batch_chunks_give_the_logits_of_the_same_chunks(tmp_path):
    model = randomize(create_model("resnet20_1w1a", 10), seed=4)
    x = torch.randn(5, 3, 32, 32)
    export(model, x[:1], tmp_path / "m.onebit", check=False)
    with torch.no_grad():
        expected = torch.cat([model(x[i:i + 2]) for i in range(0, 5, 2)])
    assert torch.equal(load(tmp_path / "m.onebit", batch_chunk=2)(x), expected)


def test_batch_chunks_only_for_graphs_with_independent_samples():
    from onebit.deploy.runtime import _mixes_samples

    x = {"node": "x"}
    assert _mixes_samples({"name": "c", "op": "call", "fn": "torch.cat", "args": [[x, x], 0]})
    assert not _mixes_samples({"name": "c", "op": "call", "fn": "torch.cat", "args": [[x, x], 1]})
    assert _mixes_samples({"name": "v", "op": "method", "fn": "view", "args": [x, -1]})
    assert not _mixes_samples({"name": "f", "op": "method", "fn": "flatten", "args": [x, 1]})
    assert _mixes_samples({"name": "f", "op": "call", "fn": "torch.flatten", "args": [x]})
    assert not _mixes_samples({"name": "p", "op": "call", "fn": "pad", "args": [x, {"tuple": [0, 0, 0, 0, 2, 2]}]})
    assert _mixes_samples({"name": "s", "op": "call", "fn": "torch.mean", "args": [x]})
