"""Model registry (timm-style): ``create_model(name, num_classes=...)`` and ``list_models()``."""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

from onebit.quant.methods import get_method
from onebit.utils import suggest

__all__ = ["ModelEntry", "register_model", "create_model", "list_models", "get_entry", "model_options"]

BUILDER_ARGUMENTS = ("num_classes", "in_channels", "image_size", "layers")
"""What ``create_model`` passes to every builder; its other keyword parameters are the model's options."""


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., nn.Module]
    default_method: str
    source: str
    """Where the definition comes from (paper / seed), shown by ``onebit models``."""
    input_size: int
    """The image side the architecture is designed for (32 for CIFAR, 224 for ImageNet)."""


_MODELS: dict[str, ModelEntry] = {}


def register_model(name: str, *, default_method: str = "bnn", source: str = "", input_size: int = 32):
    """Decorator registering a builder ``fn(num_classes, in_channels, image_size, layers, **kw)``."""

    def wrap(fn):
        if name in _MODELS:
            raise ValueError(f"model {name!r} is already registered")
        parameters = inspect.signature(fn).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
            raise TypeError(f"the builder of {name!r} takes **kwargs: name its options (or give it a __signature__)")
        missing = [a for a in BUILDER_ARGUMENTS if a not in parameters]
        if missing:
            raise TypeError(f"the builder of {name!r} lacks the arguments {', '.join(missing)}")
        _MODELS[name] = ModelEntry(name, fn, default_method, source, input_size)
        return fn

    return wrap


def get_entry(name: str) -> ModelEntry:
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}{suggest(name, _MODELS)}")
    return _MODELS[name]


def list_models() -> list[ModelEntry]:
    return [_MODELS[k] for k in sorted(_MODELS)]


def model_options(name: str) -> dict[str, Any]:
    """The keyword options of a registered model with their defaults (``create_model(name, **options)``)."""
    parameters = inspect.signature(get_entry(name).builder).parameters
    return {k: p.default for k, p in parameters.items() if k not in BUILDER_ARGUMENTS}


def create_model(
    name: str,
    num_classes: int = 10,
    *,
    in_channels: int = 3,
    image_size: int | None = None,
    method=None,
    binary_type: tuple[bool, bool] = (True, True),
    pad_value: float = 0.0,
    **kwargs,
) -> nn.Module:
    """Build a registered model.

    ``method`` (name or ``Method``) chooses the quantizers of every binary layer, default the
    model's own; ``binary_type=(activations, weights)`` keeps one side full precision;
    ``pad_value`` is the padding value of binary convolutions (0 as in the papers, or +1).
    """
    from onebit.models.common import BinaryLayers

    entry = get_entry(name)
    unknown = sorted(set(kwargs) - set(model_options(name)))
    if unknown:
        known = ", ".join(f"{k}={v!r}" for k, v in model_options(name).items()) or "none"
        raise ValueError(f"model {name!r} has no option {', '.join(map(repr, unknown))} (its options: {known})")
    image_size = image_size or entry.input_size
    method = get_method(method or entry.default_method)
    if method.options().get("max_side", image_size) < image_size:
        # learned spatial scales (xnorpp) need an entry per output row and column, and no
        # layer's output is larger than the image
        method = method.with_options(max_side=image_size)
    layers = BinaryLayers(method, binary_type=binary_type, pad_value=pad_value)
    model = entry.builder(
        num_classes=num_classes,
        in_channels=in_channels,
        image_size=image_size,
        layers=layers,
        **kwargs,
    )
    model.onebit_name = name
    return model
