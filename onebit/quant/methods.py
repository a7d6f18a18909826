"""Binarization methods: a named pairing of an input and a weight quantizer.

``onebit train --method NAME`` and ``create_model(..., method=NAME)`` pick one; every
binary layer of the model then gets fresh quantizers from it. A method may also bring
layer options (e.g. a learned output scale) and per-epoch training callbacks.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from onebit.quant.base import QuantizerSpec

__all__ = ["Method", "register_method", "get_method", "list_methods"]


@dataclass(frozen=True)
class Method:
    name: str
    input_quantizer: QuantizerSpec
    weight_quantizer: QuantizerSpec
    description: str = ""
    conv_kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments for every ``BinaryConv2d``/``BinaryLinear`` the method builds."""


_METHODS: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    if method.name in _METHODS:
        raise ValueError(f"method {method.name!r} is already registered")
    _METHODS[method.name] = method
    return method


def get_method(method: str | Method) -> Method:
    if isinstance(method, Method):
        return method
    if method not in _METHODS:
        from onebit.utils import suggest

        raise ValueError(f"unknown method {method!r}{suggest(method, _METHODS)}")
    return _METHODS[method]


def list_methods() -> list[Method]:
    return [_METHODS[k] for k in sorted(_METHODS)]


register_method(
    Method(
        "bnn",
        input_quantizer="ste_sign",
        weight_quantizer="ste_sign",
        description="BinaryNet (Hubara et al. 2016): sign forward, clipped straight-through backward",
    )
)
