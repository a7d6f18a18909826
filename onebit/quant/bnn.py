r"""BinaryNet (Courbariaux, Hubara et al., 2016, arXiv:1602.02830) weights.

Forward ``sign(W)``, no scale; backward identity. After every optimizer step the latent
weights are clipped to [-1, 1] (so the clipped STE's indicator would always be 1): the
engine calls ``after_step()`` on every module that defines it, and :class:`BnnWeight`
clamps its layer's weight there. Activations are ``sign`` with the clipped STE
(:class:`~onebit.quant.SteSign`, ``1[|x| <= 1]``).
"""
from __future__ import annotations

import torch

from onebit.quant.base import register_quantizer
from onebit.quant.functional import identity_grad, sign_with_surrogate
from onebit.quant.owner import LayerBoundQuantizer

__all__ = ["BnnWeight"]


@register_quantizer("bnn_weight")
class BnnWeight(LayerBoundQuantizer):
    """``sign(W)`` with identity gradient; ``after_step()`` clips the latent weights to
    ``[-weight_clip, weight_clip]``."""

    def __init__(self, weight_clip: float = 1.0):
        super().__init__()
        if weight_clip <= 0:
            raise ValueError(f"weight_clip must be positive, got {weight_clip}")
        self.weight_clip = float(weight_clip)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return sign_with_surrogate(w, identity_grad)

    @torch.no_grad()
    def after_step(self) -> None:
        self.layer.weight.clamp_(-self.weight_clip, self.weight_clip)

    def extra_repr(self) -> str:
        return f"weight_clip={self.weight_clip}"
