"""Every registered model with every method, on every data set shape: it builds, runs forward
and backward, and exports to the 1-bit runtime or is refused with a one-line reason.

Models with a width option are built narrow (the wiring, not the width, is under test), and
each is run on its smallest supported shape; the data set shapes themselves are checked with the
model's own method. A combination that cannot work must say why, as a ``ValueError`` naming
what to change, at build time or at the first forward.
"""
from __future__ import annotations

import pytest
import torch

from onebit.deploy import ExportError, export
from onebit.models import create_model, list_models
from onebit.models.inputs import DATASET_SHAPES
from onebit.models.registry import model_options
from onebit.quant import list_methods

from helpers import randomize

pytestmark = pytest.mark.usefixtures("one_thread")

MODELS = [e.name for e in list_models()]
METHODS = [m.name for m in list_methods()]

# Combinations that are refused, with the words of the reason (anything else must work).
REFUSED = {
    ("mobilenetv1_bireal_025_1w1a", "ienet"): "needs groups=1",
    ("mobilenetv1_bireal_05_1w1a", "ienet"): "needs groups=1",
}
# Data set shapes a model does not take, with the words of the reason.
UNSUPPORTED_SHAPES = {
    "alexnet_1w1a": ("divisible by 8", ("mnist", "fashion-mnist")),
    "vgg_small_1w1a": ("divisible by 8", ("mnist", "fashion-mnist")),
    "alexnet_fb_1w1a": ("divisible by 8", ("mnist", "fashion-mnist")),
    "vgg_small_fb_1w1a": ("divisible by 8", ("mnist", "fashion-mnist")),
}


def narrow(name: str) -> dict:
    """Keyword options that make the model small where it has a width option."""
    options = model_options(name)
    if "widths" in options:
        return {"widths": (8, 8, 16, 16)[:len(options["widths"])]}
    if "width" in options:
        return {"width": 8}
    if "width_multiplier" in options:
        return {"width_multiplier": 0.25}
    return {}


def supported_shapes(name: str) -> list[str]:
    excluded = UNSUPPORTED_SHAPES.get(name, ("", ()))[1]
    return [d for d in DATASET_SHAPES if d not in excluded]


def smallest_shape(name: str) -> tuple[int, int, int]:
    return min((DATASET_SHAPES[d] for d in supported_shapes(name)), key=lambda s: (s[2], s[1]))


def build(name: str, method: str, shape: tuple[int, int, int]):
    classes, channels, side = shape
    return create_model(name, classes, in_channels=channels, image_size=side, method=method, **narrow(name))


def check_export(model, x, path) -> None:
    """Exported and checked against the model, or refused with a one-line 'cannot export' reason.
    Weights of power-of-two magnitude keep PyTorch's float sums exact, so the runtime must agree."""
    try:
        program = export(randomize(model), x[:1], path, check=True)
    except ExportError as e:
        assert str(e).startswith("cannot ") and "\n" not in str(e), str(e)
        return
    assert program.check["top1_agree"] == 1.0 and program.check["max_rel"] <= 1e-4, program.check


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", MODELS)
def test_model_with_method_trains_and_exports(name, method, tmp_path):
    shape = smallest_shape(name)
    if (name, method) in REFUSED:
        with pytest.raises(ValueError, match=REFUSED[name, method]):
            build(name, method, shape)
        return
    torch.manual_seed(0)
    model = build(name, method, shape).train()
    x = torch.randn(2, shape[1], shape[2], shape[2])
    out = model(x)
    assert out.shape == (2, shape[0]) and torch.isfinite(out).all()
    out.square().mean().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad, f"parameters without a gradient: {no_grad[:5]}"
    check_export(model, x, tmp_path / "m.onebit")


def input_shapes() -> dict[tuple[int, int], list[str]]:
    """Data sets by input (channels, side): those that differ only in their number of classes."""
    groups: dict[tuple[int, int], list[str]] = {}
    for dataset, (_, channels, side) in DATASET_SHAPES.items():
        groups.setdefault((channels, side), []).append(dataset)
    return groups


@pytest.mark.parametrize("name", MODELS)
def test_model_takes_every_data_set_shape_or_says_why(name):
    """At full width with the model's own method; on the meta device, as only shapes matter here.
    One network per input shape, with the largest class count of the data sets that share it."""
    for (channels, side), datasets in input_shapes().items():
        supported = {d in supported_shapes(name) for d in datasets}
        assert len(supported) == 1, f"{name}: {datasets} share an input shape but not their support"
        classes = max(DATASET_SHAPES[d][0] for d in datasets)
        with torch.device("meta"):
            def forward():
                model = create_model(name, classes, in_channels=channels, image_size=side).eval()
                return model(torch.zeros(1, channels, side, side))

            if supported.pop():
                assert forward().shape == (1, classes), datasets
            else:
                with pytest.raises(ValueError, match=UNSUPPORTED_SHAPES[name][0]):
                    forward()


@pytest.mark.parametrize("name,side", [("reactnet_a", 224), ("resnet18_1w1a", 224), ("resnet20_1w1a", 32)])
def test_learned_spatial_scales_cover_the_image_size(name, side):
    """xnorpp's per-row and per-column scales are sized from ``image_size``: ReActNet-A's first
    binary layer outputs 112x112 at 224, beyond the option's default of 64 entries."""
    with torch.device("meta"):
        model = create_model(name, 1000, image_size=side, method="xnorpp").eval()
        assert model(torch.zeros(1, 3, side, side)).shape == (1, 1000)
    sides = {len(m.row) for m in model.modules() if hasattr(m, "row")}
    assert sides == {max(64, side)}
