"""The plain 1-bit quantizers. Method-specific ones (RBNN, IR-Net, ReActNet...) live beside
this file, one module per method, and register themselves the same way."""
from __future__ import annotations

import torch

from onebit.quant.base import Quantizer, register_quantizer
from onebit.quant.functional import approx_sign_grad, clipped_identity_grad, sign_with_surrogate


@register_quantizer("ste_sign")
class SteSign(Quantizer):
    r"""Binarize with ``sign`` (0 -> +1); gradient passes straight through where ``|x| <= clip``.

    .. math:: q(x) = \operatorname{sign}(x), \qquad \partial q / \partial x = 1_{|x| \le c}

    The estimator of BinaryNet (Hubara et al., 2016, arXiv:1602.02830), larq's ``ste_sign``.
    ``clip=None`` lets every gradient through (plain STE).
    """

    def __init__(self, clip: float | None = 1.0):
        super().__init__()
        self.clip = clip
        self.register_buffer("_clip", torch.tensor(float("inf") if clip is None else float(clip)), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sign_with_surrogate(x, clipped_identity_grad, self._clip.to(x.dtype))

    def extra_repr(self) -> str:
        return f"clip={self.clip}"


@register_quantizer("approx_sign")
class ApproxSign(Quantizer):
    r"""Binarize with ``sign``; backward Bi-Real's ApproxSign derivative (Liu et al., ECCV 2018).

    .. math:: \partial q / \partial x = \max(0,\ 2 - 2|x|)

    the derivative of the piecewise quadratic ``2x + x^2`` on [-1, 0), ``2x - x^2`` on [0, 1).
    Activations of Bi-Real Net and ReActNet (after the ReActNet models' learned shifts).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sign_with_surrogate(x, approx_sign_grad)


@register_quantizer("frozen_binary")
class FrozenBinaryWeight(Quantizer):
    """The weight is already binary and is used as it is: what ``onebit train --bn_retrain``
    leaves in every binary layer. The weight is ``+-alpha`` per output channel (the scale
    folded in), or ``+-1`` with ``gain`` (a buffer) as the layer's output gain when the method
    applies its scale to the output (RBNN)."""

    def __init__(self, gain: torch.Tensor | None = None):
        super().__init__()
        if gain is not None:
            self.register_buffer("gain", gain.detach().clone())

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w

    def output_gain(self) -> torch.Tensor | None:
        return getattr(self, "gain", None)
