r"""Bi-Real Net (Liu et al., ECCV 2018) weights: the magnitude-aware sign, also ReActNet's.

Forward ``alpha_o sign(W)`` with ``alpha_o = mean |W_o|`` per output channel (no gradient
through alpha; the scale folds into the following BatchNorm at inference). The sources
disagree on the backward, so all three are offered (``gradient=``):

* ``"paper"`` (default): ``alpha_o 1[|W| <= 1]``, the paper's magnitude-aware gradient and
  larq's ``MagnitudeAwareSign``;
* ``"pytorch"``: ``1[|W| <= 1]``, no alpha factor: the official PyTorch code of Bi-Real Net
  and ReActNet (detach trick around a clamp); ReActNet's default;
* ``"caffe"``: identity (no clip, no alpha): the official Caffe training layer.

With Adam the three are nearly the same (a per-channel, slowly varying factor); with SGD
they differ. Activations of Bi-Real Net use :class:`~onebit.quant.quantizers.ApproxSign`.
"""
from __future__ import annotations

import torch

from onebit.quant.base import Quantizer, register_quantizer
from onebit.quant.functional import channel_mean_abs, identity_grad, scaled_sign_with_surrogate

__all__ = ["MagnitudeAwareSign", "GRADIENTS"]


def _paper_grad(x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    return (x.abs() <= 1.0).to(x.dtype) * alpha


def _pytorch_grad(x: torch.Tensor) -> torch.Tensor:
    return (x.abs() <= 1.0).to(x.dtype)


GRADIENTS = {"paper": _paper_grad, "pytorch": _pytorch_grad, "caffe": identity_grad}


@register_quantizer("magnitude_aware_sign")
class MagnitudeAwareSign(Quantizer):
    """``mean|W_o| * sign(W)``; ``gradient`` in ``"paper"`` (default), ``"pytorch"``, ``"caffe"``."""

    def __init__(self, gradient: str = "paper"):
        super().__init__()
        if gradient not in GRADIENTS:
            raise ValueError(f"gradient must be one of {sorted(GRADIENTS)}, got {gradient!r}")
        self.gradient = gradient

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        alpha = channel_mean_abs(w)
        params = (alpha,) if self.gradient == "paper" else ()
        return scaled_sign_with_surrogate(w, alpha, GRADIENTS[self.gradient], *params)

    def extra_repr(self) -> str:
        return f"gradient={self.gradient!r}"
