"""What a binary layer's quantizers compute, in the form the 1-bit runtime needs.

Export protocol (see :mod:`onebit.quant.base`), so that a new method needs no change here:

* activation quantizers: ``export_threshold() -> Tensor | float | "sample_mean"``, the ``t`` of
  ``q(x) = sign(x - t)``: one value, one per input channel, or ``"sample_mean"`` for the mean of
  each sample over (C, H, W) (data-dependent, RBNN). ``Quantizer`` answers 0; a module that
  does not define it is tried as ``sign(x)``;
* weight quantizers: ``export_weight(weight) -> (negative, scale)`` (optional): a boolean tensor
  shaped like ``weight`` (True where the binary weight is -1) and a per-output-channel scale (or
  None). Without it, weights are read from ``layer.quantized_weight()``, which must be
  ``+-alpha_o`` (a constant magnitude per output channel).

Every answer is checked against the quantizer's own forward on probe inputs: a quantizer that
computes something else (``{0, 1}`` activations, added noise, stacked branches...) is refused
with a clear error.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from onebit.quant.base import precision_of

__all__ = ["ExportError", "ActivationSign", "activation_sign", "weight_signs"]

SAMPLE_MEAN = "sample_mean"


class ExportError(ValueError):
    """A model (or one of its layers) that the 1-bit runtime cannot reproduce exactly."""


@dataclass
class ActivationSign:
    """``q(x) = sign(x - threshold)``, ``sign(0) = +1``."""

    threshold: torch.Tensor | None
    """``[C]`` float32 per input channel, or None for 0."""
    sample_mean: bool = False
    """True: the threshold is the mean of each sample over (C, H, W) instead."""

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        """What the runtime computes, in PyTorch (for the probes)."""
        if self.sample_mean:
            t = x.mean(tuple(range(1, x.dim())), keepdim=True)
        elif self.threshold is None:
            t = torch.zeros(())
        else:
            t = self.threshold.view(1, -1, *([1] * (x.dim() - 2)))
        return torch.where(x >= t, 1.0, -1.0)


def _name(q: nn.Module) -> str:
    return getattr(q, "registered_name", type(q).__name__)


@torch.no_grad()
def activation_sign(q: nn.Module, channels: int, spatial: bool = True) -> ActivationSign:
    """The threshold of activation quantizer ``q`` of a layer with ``channels`` inputs, checked."""
    if precision_of(q) != 1:
        raise ExportError(f"cannot export quantizer {_name(q)}: its activations are not 1-bit (precision {precision_of(q)})")
    claimed = q.export_threshold() if callable(getattr(q, "export_threshold", None)) else 0.0
    if isinstance(claimed, str):
        if claimed != SAMPLE_MEAN:
            raise ExportError(f"cannot export quantizer {_name(q)}: unknown threshold kind {claimed!r}")
        found = ActivationSign(None, sample_mean=True)
    else:
        t = torch.as_tensor(claimed, dtype=torch.float32).detach().flatten()
        if t.numel() not in (1, channels):
            raise ExportError(f"cannot export quantizer {_name(q)}: {t.numel()} thresholds for {channels} channels")
        found = ActivationSign(None if not t.any() else t.expand(channels).clone())
    shape = (3, channels, 5, 4) if spatial else (3, channels)
    g = torch.Generator().manual_seed(0)
    probe = torch.randn(shape, generator=g) * torch.tensor([0.1, 1.0, 10.0]).view(3, *([1] * (len(shape) - 1)))
    probe = probe + torch.tensor([0.5, -0.3, 2.0]).view(3, *([1] * (len(shape) - 1)))
    if found.threshold is not None:  # plant exact ties: sign(0) = +1
        if spatial:
            probe[0, :, 0, :] = found.threshold[:, None]
        else:
            probe[0] = found.threshold
    was_training = q.training
    q.eval()
    try:
        got = q(probe)
    finally:
        q.train(was_training)
    if got.shape != probe.shape or not torch.equal(got, found.reference(probe)):
        raise ExportError(
            f"cannot export quantizer {_name(q)}: its forward is not sign(x - t) with a per-channel or per-sample "
            "threshold t (checked on probe inputs); give it an export_threshold() method if it is"
        )
    return found


@torch.no_grad()
def weight_signs(layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(negative, scale)`` of a binary layer's weights: True where the binary weight is -1, and
    the positive per-output-channel magnitude (None when it is 1 everywhere)."""
    q = layer.weight_quantizer
    if q is not None and hasattr(q, "export_weight"):
        negative, scale = q.export_weight(layer.weight)
        return negative.bool(), None if scale is None else torch.as_tensor(scale, dtype=torch.float32).flatten()
    was_training = layer.training
    layer.eval()
    try:
        w = layer.quantized_weight().detach().float()
    finally:
        layer.train(was_training)
    if w.shape != layer.weight.shape:
        raise ExportError(f"cannot export weight quantizer {_name(q)}: it changes the weight shape {tuple(layer.weight.shape)} -> {tuple(w.shape)}")
    magnitude = w.abs().reshape(w.shape[0], -1)
    scale = magnitude.amax(1)
    if not torch.equal(magnitude, scale[:, None].expand_as(magnitude)):
        raise ExportError(
            f"cannot export weight quantizer {_name(q) if q is not None else 'None'}: its weights are not +-alpha "
            "with one alpha per output channel"
        )
    return w < 0, None if torch.all(scale == 1) else scale
