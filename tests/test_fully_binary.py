"""Fully binary networks (seed 003) and golden vectors checked against the training graph."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from onebit import cli
from onebit.analysis import summary
from onebit.deploy.golden import write_golden
from onebit.deploy.ops import sign_step
from onebit.layers import BinaryConv2d, BinaryLinear, ThermometerEncoding
from onebit.layers.activations import LearnableBias
from onebit.models import create_model
from onebit.models.fully_binary import Offset
from onebit.quant import precision_of

from helpers import fit_batch

pytestmark = pytest.mark.usefixtures("one_thread")

FULLY_BINARY = ["vgg_small_fb_1w1a", "resnet20_fb_1w1a", "alexnet_fb_1w1a"]


def test_thermometer_encoding_3_to_9_channels():
    enc = ThermometerEncoding((-1.0, 0.0, 1.0))
    x = torch.tensor([-2.0, -1.0, -0.5, 0.0, 0.7, 1.0, 3.0]).view(1, 1, 1, 7).expand(1, 3, 1, 7).clone()
    x[0, 1] *= -1  # a different value per channel
    bits = enc(x)
    assert bits.shape == (1, 9, 1, 7)
    for c in range(3):
        for k, t in enumerate((-1.0, 0.0, 1.0)):
            assert torch.equal(bits[0, 3 * c + k], torch.where(x[0, c] >= t, 1.0, -1.0))
    # thermometer: the bit sum is linear in the level (number of thresholds reached)
    level = (x.unsqueeze(2) >= torch.tensor([-1.0, 0.0, 1.0]).view(1, 1, 3, 1, 1)).sum(2)
    assert torch.equal(bits.view(1, 3, 3, 1, 7).sum(2), 2.0 * level - 3)
    with pytest.raises(ValueError, match="increasing"):
        ThermometerEncoding((1.0, 0.0))


@pytest.mark.parametrize("name", FULLY_BINARY)
def test_every_layer_is_binary_and_bn_is_an_offset(name):
    model = create_model(name, 10)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    compute = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert compute and all(isinstance(m, (BinaryConv2d, BinaryLinear)) for m in compute)
    assert all(precision_of(m.input_quantizer) == 1 and precision_of(m.weight_quantizer) == 1 for m in compute)
    assert isinstance(compute[-1], BinaryLinear) and compute[0].in_channels == 9
    assert any(isinstance(m, LearnableBias) for m in model.modules())
    s = summary(model, (1, 3, 32, 32))
    assert "0.000e+00 float (FLOPs), 100.0% binary" in s.totals_text()


def _randomised(model: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, Offset):
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=g) * 3)
    return model.eval()


@pytest.mark.parametrize("pad_value", [0.0, 1.0])
def test_golden_vectors_match_the_training_graph(tmp_path, pad_value):
    model = _randomised(create_model("alexnet_fb_1w1a", 10, method="irnet", pad_value=pad_value))
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    index = write_golden(model, x, tmp_path)
    index = json.loads((tmp_path / "index.json").read_text())
    load = lambda f: np.load(tmp_path / f)  # noqa: E731
    assert np.array_equal(load(index["logits"]), model(x).detach().numpy())
    assert np.array_equal(load(index["encoding"]["bits"]), ThermometerEncoding()(x).numpy().astype(np.int8))
    layers = index["layers"]
    assert len(layers) == 6 and layers[0]["input_bits"] and layers[-1]["kind"] == "linear"
    assert np.array_equal(load(layers[0]["input_bits"]), load(index["encoding"]["bits"]))
    offsets = [(m.scale, m.bias.detach().numpy()) for m in model.features if isinstance(m, Offset)]
    pools = [isinstance(model.features[i + 1], nn.MaxPool2d) for i, m in enumerate(model.features)
             if isinstance(m, BinaryConv2d)]
    rng = np.random.default_rng(0)
    for k, layer in enumerate(layers):
        bits, w, acc = load(layer["input_bits"]), load(layer["weight_bits"]), load(layer["accumulator"])
        assert bits.dtype == np.int8 and set(np.unique(bits)) <= {-1, 1} and set(np.unique(w)) <= {-1, 1}
        assert acc.dtype == np.int32
        alpha = load(layer["weight_scale"]) if layer["weight_scale"] else np.ones(w.shape[0], np.float32)
        shape = (1, -1) + (1,) * (acc.ndim - 2)
        assert np.allclose(alpha.reshape(shape) * acc, load(layer["output"]), rtol=1e-6)
        if layer["kind"] == "conv2d":  # naive dot products at random positions, the padding as recorded
            p = layer["padding"][0]
            padded = np.pad(bits.astype(np.int64), ((0, 0), (0, 0), (p, p), (p, p)), constant_values=int(layer["pad_value"]))
            for _ in range(20):
                o, i, j = rng.integers(acc.shape[1]), rng.integers(acc.shape[2]), rng.integers(acc.shape[3])
                window = padded[0, :, i:i + 3, j:j + 3]
                assert acc[0, o, i, j] == int((window * w[o]).sum())
            # the chain to the next layer: [max pool] -> + offset -> sign (hardtanh keeps the sign)
            y = alpha.reshape(shape) * acc
            if pools[k]:
                y = y.reshape(y.shape[0], y.shape[1], y.shape[2] // 2, 2, y.shape[3] // 2, 2).max((3, 5))
            scale, bias = offsets[k]
            nxt = np.where(y * np.float32(scale) + bias.reshape(shape) >= 0, 1, -1)
            assert np.array_equal(nxt.reshape(1, -1) if k == len(offsets) - 1 else nxt,
                                  load(layer["output_bits"])), layer["name"]
            # the same bits from the integer step the runtime runs (thresholds on the [pooled] accumulator)
            step = layer["integer_step"]
            assert step["kind"] == "threshold" and step["pooled"] == pools[k]
            pooled = torch.from_numpy(acc).float()
            pooled = nn.functional.max_pool2d(pooled, 2) if pools[k] else pooled
            bits = sign_step(pooled, torch.from_numpy(load(step["threshold"])), torch.from_numpy(load(step["flip"])))
            assert np.array_equal(bits.numpy().reshape(nxt.shape), nxt), layer["name"]
        else:
            assert np.array_equal(acc, (bits.astype(np.int64) @ w.T.astype(np.int64)))
            gain = model.logit_scale.gain.item() * model.logit_scale.scale
            assert np.allclose(gain * alpha * acc, load(index["logits"]), rtol=1e-5)


def test_golden_command_line_and_refusal(tmp_path, capsys):
    assert cli.main(["export", "--model", "resnet20_fb_1w1a", "--dataset", "cifar10", "--golden", str(tmp_path / "g")]) == 0
    assert "golden vectors of 20 binary layers" in capsys.readouterr().out
    assert len(json.loads((tmp_path / "g" / "index.json").read_text())["layers"]) == 20
    with pytest.raises(ValueError, match="no layer with 1-bit inputs"):
        write_golden(nn.Sequential(nn.Conv2d(3, 4, 3)), torch.zeros(1, 3, 8, 8), tmp_path / "none")
    with pytest.raises(ValueError, match="one input"):
        write_golden(create_model("resnet20_fb_1w1a", 10), torch.zeros(2, 3, 32, 32), tmp_path / "two")


def test_fully_binary_resnet_learns_a_batch():
    # A network without BatchNorm trains slowly (BENCHMARKS.md, Fully binary): here it must fit
    # 64 digits, from about 10% to over half of them, in 80 Adam steps.
    from onebit.data import build_data

    torch.manual_seed(0)
    data = build_data("digits", batch_size=64)
    data.train.set_epoch(0, 0)
    x, y = next(iter(data.train))
    model = fit_batch(create_model("resnet20_fb_1w1a", 10, in_channels=1, image_size=8, method="bireal", pad_value=1),
                      x, y, steps=80, lr=0.005)
    with torch.no_grad():
        assert (model(x).argmax(1) == y).float().mean() > 0.5
