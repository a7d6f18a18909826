r"""ReCU (Xu et al., ICCV 2021), as its official code (z-hXu/ReCU ``binarized_modules.py``).

Weights (:class:`RecuWeight`):

1. ``w1 = (W - mean_o) / (sqrt(var_o + 1e-5) / (2 sqrt 2))`` per output channel (std 2 sqrt 2);
2. ``Q = -E ln(2 - 2 tau)``, ``E = mean |w1|`` over the layer, detached: the tau-quantile of
   ``|w|`` under a Laplace(0, E) model;
3. ``w2 = clamp(w1, -Q, Q)``, the Rectified Clamp Unit (zero gradient outside);
4. ``sign(w2)``, backward identity; times a learnable per-channel ``alpha``, init U[0, 1).

``tau`` follows :func:`~onebit.quant.schedules.recu_tau` (0.85 -> 0.99) from
``on_epoch_start``; before the first epoch it is 1, i.e. no clamp (as the reference's buffer).

Activations (:class:`RecuInput`): in training ``x / sqrt(var_sample(x) + 1e-5)`` (per sample
over C, H, W; not in eval, where only the sign matters), ``sign``, ApproxSign backward.

``alpha`` multiplies the +-1 weights rather than the convolution output (per output channel:
the same outputs and gradients up to float rounding, cheaper).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from onebit.quant.base import Quantizer, register_quantizer
from onebit.quant.functional import approx_sign_grad, channel_shape, identity_grad, sign_with_surrogate
from onebit.quant.schedules import recu_tau

__all__ = ["RecuWeight", "RecuInput"]


def _per_sample_var(x: torch.Tensor) -> torch.Tensor:
    return x.var(tuple(range(1, x.dim())), keepdim=True)


@register_quantizer("recu_weight")
class RecuWeight(Quantizer):
    def __init__(self, tau_min: float = 0.85, tau_max: float = 0.99):
        super().__init__()
        if not 0 < tau_min <= tau_max < 1:
            raise ValueError(f"need 0 < tau_min <= tau_max < 1, got tau_min={tau_min}, tau_max={tau_max}")
        self.tau_min, self.tau_max = float(tau_min), float(tau_max)
        self.register_buffer("tau", torch.tensor(1.0))

    def build(self, layer: nn.Module) -> None:
        self.alpha = nn.Parameter(torch.rand(channel_shape(layer.weight), device=layer.weight.device))

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        self.tau.fill_(recu_tau(epoch, epochs, self.tau_min, self.tau_max))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        w0 = w - w.mean(tuple(range(1, w.dim())), keepdim=True)
        w1 = w0 / (torch.sqrt(_per_sample_var(w0) + 1e-5) / (2.0 * math.sqrt(2.0)))
        q = (-w1.abs().mean() * torch.log(2.0 - 2.0 * self.tau)).detach()
        w2 = torch.clamp(w1, -q, q)
        return sign_with_surrogate(w2, identity_grad) * self.alpha

    def extra_repr(self) -> str:
        return f"tau_min={self.tau_min}, tau_max={self.tau_max}"


@register_quantizer("recu_input")
class RecuInput(Quantizer):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            x = x / torch.sqrt(_per_sample_var(x) + 1e-5)
        return sign_with_surrogate(x, approx_sign_grad)
