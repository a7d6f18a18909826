"""Model registry (timm-style): ``create_model(name, num_classes=...)`` and ``list_models()``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from onebit.utils import suggest

__all__ = ["ModelEntry", "register_model", "create_model", "list_models", "get_entry"]


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
        _MODELS[name] = ModelEntry(name, fn, default_method, source, input_size)
        return fn

    return wrap


def get_entry(name: str) -> ModelEntry:
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}{suggest(name, _MODELS)}")
    return _MODELS[name]


def list_models() -> list[ModelEntry]:
    return [_MODELS[k] for k in sorted(_MODELS)]


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
    layers = BinaryLayers(method or entry.default_method, binary_type=binary_type, pad_value=pad_value)
    model = entry.builder(
        num_classes=num_classes,
        in_channels=in_channels,
        image_size=image_size or entry.input_size,
        layers=layers,
        **kwargs,
    )
    model.onebit_name = name
    return model
