"""Quantizers are small named ``nn.Module`` objects, looked up by string (as in larq).

A quantizer maps a real tensor to its quantized value in the forward pass and defines
the gradient that flows back (a surrogate). Layers take them as arguments::

    BinaryConv2d(64, 64, 3, input_quantizer="ste_sign", weight_quantizer=SteSign(clip=1.25))

Extension points, all optional:

* ``precision`` (class attribute): bits of the values it produces; the summary reads it.
* ``build(layer)``: called once by the layer that owns the quantizer, so that a quantizer
  can size per-channel parameters or buffers from the layer's shape.
* ``set_temperature(t)``: called at every epoch start by the training engine when the run
  has a temperature schedule (``--Tmin/--Tmax``); scheduled surrogates derive their own
  ``t`` and ``k`` from it.
* ``on_epoch_start(epoch, epochs)``: any module of a model may define it; the engine calls
  it before the first batch of every epoch (e.g. RBNN's rotation update).
* ``output_gain()``: a weight quantizer may return a per-output-channel factor that the layer
  multiplies its *output* by, instead of scaling the +-1 weights (RBNN's alpha, where its
  reference puts it): the products of +-1 values then sum to exact integers, and one rounding
  follows, as in the bit-packed runtime.
* Export to the 1-bit runtime (``onebit.deploy``): an activation quantizer states its
  ``export_threshold()``, the ``t`` of ``q(x) = sign(x - t)`` in eval mode (default 0); a weight
  quantizer may give ``export_weight(weight) -> (negative, scale)`` (default: read from the
  layer's quantized weight). The exporter checks either claim against ``forward`` on probes.
"""
from __future__ import annotations

from typing import Callable, Union

import torch
from torch import nn

__all__ = ["Quantizer", "register_quantizer", "get_quantizer", "list_quantizers", "QuantizerSpec"]


class Quantizer(nn.Module):
    """Base class of every quantizer. Subclasses implement ``forward``."""

    precision: int = 1

    def build(self, layer: nn.Module) -> None:  # noqa: D401 - hook, default does nothing
        """Size parameters from the owning layer (default: nothing to size)."""

    def quantized_shape(self, shape: torch.Size) -> torch.Size:
        """Shape of what ``forward`` returns for an input of ``shape`` (default: the same; IE-Net's
        weights stack two branches). The summary counts MACs with it, without running ``forward``."""
        return shape

    def output_gain(self) -> torch.Tensor | None:
        """Per-output-channel factor the owning layer applies to its output (default: none)."""
        return None

    def export_threshold(self) -> torch.Tensor | float | str:
        """The ``t`` of ``sign(x - t)`` this quantizer computes in eval mode: a number, one value per
        input channel, or ``"sample_mean"`` (the mean of each sample over C, H, W). Default 0."""
        return 0.0


QuantizerSpec = Union[None, str, Quantizer, Callable[[], nn.Module]]
_QUANTIZERS: dict[str, Callable[..., Quantizer]] = {}


def register_quantizer(name: str):
    """Class decorator: make a quantizer available by ``name`` (``get_quantizer(name)``)."""

    def wrap(cls):
        if name in _QUANTIZERS:
            raise ValueError(f"quantizer {name!r} is already registered")
        _QUANTIZERS[name] = cls
        cls.registered_name = name
        return cls

    return wrap


def list_quantizers() -> list[str]:
    return sorted(_QUANTIZERS)


def get_quantizer(spec: QuantizerSpec) -> nn.Module | None:
    """Resolve a quantizer spec to a fresh module.

    ``None`` means "keep full precision" (returns ``None``); a string is a registered
    name; a ``Quantizer`` instance is used as is; any other callable is a factory.
    """
    if spec is None or isinstance(spec, nn.Module):
        return spec
    if isinstance(spec, str):
        if spec not in _QUANTIZERS:
            from onebit.utils import suggest

            raise ValueError(f"unknown quantizer {spec!r}{suggest(spec, _QUANTIZERS)}")
        return _QUANTIZERS[spec]()
    if callable(spec):
        return spec()
    raise TypeError(f"a quantizer is None, a name, a Quantizer or a factory, not {type(spec).__name__}")


def precision_of(quantizer: nn.Module | None) -> int:
    """Bits of what ``quantizer`` produces; 32 for ``None`` (full precision)."""
    return 32 if quantizer is None else int(getattr(quantizer, "precision", 32))

