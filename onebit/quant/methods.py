"""Binarization methods: a named pairing of an input and a weight quantizer.

``onebit train --method NAME`` and ``create_model(..., method=NAME)`` pick one; every
binary layer of the model then gets fresh quantizers from it. A method may also bring
layer options (``conv_kwargs``, e.g. a learned output scale) and per-epoch training hooks
(its quantizers' ``set_temperature``, ``on_epoch_start``, ``after_step``).

Options: every keyword parameter of a method's components (its two quantizer classes and
the factories in ``conv_kwargs``) is an option of the method, with the constructor's
default. ``method.options()`` lists them; ``method.with_options(name=value)`` returns a new
method whose components receive them (an option goes to every component that takes it)::

    create_model("resnet20_1w1a", method=get_method("rbnn").with_options(rotation_update=2, a32=True))
"""
from __future__ import annotations

import ast
import dataclasses
import inspect
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Iterable

from torch import nn

from onebit.quant.scale import LearnedScale
from onebit.quant.base import QuantizerSpec, get_quantizer
from onebit.quant.bireal import MagnitudeAwareSign
from onebit.quant.bnn import BnnWeight
from onebit.quant.dorefa import DorefaInput, DorefaWeight
from onebit.quant.fda import FdaInput, FdaWeight
from onebit.quant.ienet import DualShiftSign, IeNetWeight
from onebit.quant.irnet import EdeSign, LibraPBWeight
from onebit.quant.quantizers import ApproxSign, SteSign
from onebit.quant.rbnn import RbnnInput, RbnnWeight
from onebit.quant.recu import RecuInput, RecuWeight
from onebit.quant.xnor import XnorWeight

__all__ = ["Method", "register_method", "get_method", "list_methods", "parse_method_options"]


def _factory(spec: Any) -> Callable | None:
    """The constructor behind a component spec (None for None and for ready-made instances)."""
    if isinstance(spec, str):
        return type(get_quantizer(spec))
    if spec is None or isinstance(spec, nn.Module) or not callable(spec):
        return None
    return spec


def _keyword_defaults(factory: Callable | None) -> dict[str, Any]:
    if factory is None:
        return {}
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {
        name: p.default
        for name, p in inspect.signature(factory).parameters.items()
        if p.kind in kinds and p.default is not inspect.Parameter.empty
    }


@dataclass(frozen=True)
class Method:
    name: str
    input_quantizer: QuantizerSpec
    weight_quantizer: QuantizerSpec
    description: str = ""
    conv_kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments for every ``BinaryConv2d``/``BinaryLinear`` the method builds."""
    temperature_range: tuple[float, float] | None = None
    """``(Tmin, Tmax)`` of the method's reference recipe when its quantizers follow the
    engine's temperature schedule (``set_temperature``); ``None`` when they do not."""

    def _components(self) -> dict[str, Any]:
        return {"input_quantizer": self.input_quantizer, "weight_quantizer": self.weight_quantizer, **self.conv_kwargs}

    def options(self) -> dict[str, Any]:
        """Every option of the method with its current value."""
        found: dict[str, Any] = {}
        for spec in self._components().values():
            found.update(_keyword_defaults(_factory(spec)))
        return found

    def with_options(self, **values: Any) -> Method:
        """A copy of the method whose components are built with ``values`` (unknown names are an error)."""
        known = self.options()
        unknown = sorted(set(values) - set(known))
        if unknown:
            listed = ", ".join(f"{k}={v!r}" for k, v in sorted(known.items())) or "none"
            names = ", ".join(map(repr, unknown))
            raise ValueError(f"method {self.name!r} has no option {names} (its options: {listed})")
        bound = {}
        for key, spec in self._components().items():
            factory = _factory(spec)
            mine = {k: v for k, v in values.items() if k in _keyword_defaults(factory)}
            bound[key] = partial(factory, **mine) if mine else spec
        return dataclasses.replace(
            self,
            input_quantizer=bound.pop("input_quantizer"),
            weight_quantizer=bound.pop("weight_quantizer"),
            conv_kwargs=bound,
        )


def parse_method_options(items: Iterable[str]) -> dict[str, Any]:
    """``["rotation_update=2", "a32=true", "gradient=caffe"]`` -> ``{"rotation_update": 2, ...}``:
    Python literals (numbers, True/False, quoted strings), ``true``/``false``, else the raw string."""
    options = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"a method option is NAME=VALUE, got {item!r}")
        lowered = text.strip().lower()
        if lowered in ("true", "false"):
            value: Any = lowered == "true"
        else:
            try:
                value = ast.literal_eval(text.strip())
            except (ValueError, SyntaxError):
                value = text.strip()
        options[name.strip()] = value
    return options


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


for _method in [
    Method(
        "rbnn", RbnnInput, RbnnWeight,
        "RBNN (Lin et al. 2020): bi-rotated, theta-blended standardised weights with a learned "
        "per-channel scale; per-sample standardised activations; training-aware sign",
        temperature_range=(1e-2, 1e1),
    ),
    Method(
        "irnet", EdeSign, LibraPBWeight,
        "IR-Net (Qin et al. 2020): Libra-PB weights (standardised, power-of-two scale), EDE backward",
        temperature_range=(1e-1, 1e1),
    ),
    Method(
        "bireal", ApproxSign, MagnitudeAwareSign,
        "Bi-Real Net (Liu et al. 2018): ApproxSign activations, magnitude-aware weights (gradient=paper|pytorch|caffe)",
    ),
    Method(
        "reactnet", ApproxSign, partial(MagnitudeAwareSign, gradient="pytorch"),
        "ReActNet (Liu et al. 2020): ApproxSign activations, magnitude-aware weights; its learned shifts "
        "(RSign) and RPReLUs are layers of the ReActNet models, one shift per sign as in the reference",
    ),
    Method(
        "xnor", SteSign, XnorWeight,
        "XNOR-Net (Rastegari et al. 2016): mean|W| per filter, paper gradient; clipped-STE activations",
    ),
    Method(
        "xnorpp", SteSign, SteSign,
        "XNOR-Net++ (Bulat & Tzimiropoulos 2019): clipped-STE signs, learned output scale a(x)b(x)c",
        conv_kwargs={"output_scale": LearnedScale},
    ),
    Method(
        "bnn", SteSign, BnnWeight,
        "BinaryNet (Hubara et al. 2016): clipped-STE activations, identity-STE weights "
        "clipped to [-1, 1] after each step",
    ),
    Method(
        "dorefa", DorefaInput, DorefaWeight,
        "DoReFa-Net 1-bit (Zhou et al. 2016): {0,1} activations, per-layer mean|W| weight scale",
    ),
    Method(
        "recu", RecuInput, RecuWeight,
        "ReCU (Xu et al. 2021): rectified clamp of standardised weights (tau schedule), learned scale",
    ),
    Method(
        "fda", FdaInput, FdaWeight,
        "FDA (Xu et al. 2021): Fourier-series sign gradient with noise adaptation",
    ),
    Method(
        "ienet", DualShiftSign, IeNetWeight,
        "IE-Net: RBNN's layer without rotation, dual-shift activations with a learned branch weight",
        temperature_range=(1e-2, 1e1),
    ),
]:
    register_method(_method)
