r"""FDA, Frequency Domain Approximation (Xu et al., NeurIPS 2021), as BiBench's reference layer
(htqin/BiBench ``layers/fda.py``; the official MindSpore code was not read).

* Backward of ``sign``: the derivative of the square wave's Fourier series truncated after
  ``n`` terms, :func:`~onebit.quant.functional.fda_grad` (``omega = 0.1``, zero outside |x| <= 1),
  ``n = 9 + floor(9 e / E)`` (:func:`~onebit.quant.schedules.fda_num_terms`).
* Noise adaptation, compensating the truncation residual: a bias-free MLP ``d -> d/64 -> d``
  (``d/4`` when ``d < 64``) with ReLU, plus ``0.1 sin(x)``; forward
  ``sign(x) + a_e * noise(x)`` with ``a_e = 0.05 (1 + cos(pi (e+1) / E))``
  (:func:`~onebit.quant.schedules.fda_noise_weight`), which reaches 0 at the last epoch, where
  the forward becomes exactly binary. The weights' MLP acts on each flattened filter
  (``d = C_in k_h k_w``), the activations' on the channels of each position (``d = C_in``).
* Weights are scaled by ``mean |W_o|`` per output channel (no gradient).

Unlike BiBench, whose activation noise module is created at the first forward (after the
optimizer exists, so it is never trained), ours is created by ``build``. Before the engine's
first ``on_epoch_start``: ``n = 9``, ``a_e = 0.1`` (BiBench's initial values).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from onebit.quant.base import Quantizer, register_quantizer
from onebit.quant.functional import channel_mean_abs, fda_grad, sign_with_surrogate
from onebit.quant.schedules import fda_noise_weight, fda_num_terms

__all__ = ["NoiseAdaptation", "FdaWeight", "FdaInput"]


class NoiseAdaptation(nn.Module):
    """``fc2(relu(fc1(x))) + 0.1 sin(x)`` over the last dimension, bias-free, hidden ``d/64`` (``d/4`` if d < 64)."""

    def __init__(self, d: int):
        super().__init__()
        hidden = max(1, d // (64 if d >= 64 else 4))
        self.fc1 = nn.Linear(d, hidden, bias=False)
        self.fc2 = nn.Linear(hidden, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(x))) + 0.1 * torch.sin(x)


class _FdaScheduled(Quantizer):
    def __init__(self):
        super().__init__()
        self.register_buffer("n", torch.tensor(9))
        self.register_buffer("noise_weight", torch.tensor(0.1))

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        self.n.fill_(fda_num_terms(epoch, epochs))
        self.noise_weight.fill_(fda_noise_weight(epoch, epochs))


@register_quantizer("fda_weight")
class FdaWeight(_FdaScheduled):
    def build(self, layer: nn.Module) -> None:
        self.noise = NoiseAdaptation(layer.weight[0].numel()).to(layer.weight.device)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        noise = self.noise(w.reshape(w.shape[0], -1)).reshape_as(w)
        return (sign_with_surrogate(w, fda_grad, self.n) + self.noise_weight * noise) * channel_mean_abs(w)


@register_quantizer("fda_input")
class FdaInput(_FdaScheduled):
    def build(self, layer: nn.Module) -> None:
        channels = layer.in_channels if hasattr(layer, "in_channels") else layer.in_features
        self.noise = NoiseAdaptation(channels).to(layer.weight.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        noise = self.noise(x.movedim(1, -1)).movedim(-1, 1)
        return sign_with_surrogate(x, fda_grad, self.n) + self.noise_weight * noise
