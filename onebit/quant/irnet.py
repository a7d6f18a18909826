r"""IR-Net (Qin et al., CVPR 2020, arXiv:1909.10788) as its official code (htqin/IR-Net) trains it.

* Weights, Libra-PB (:class:`LibraPBWeight`): ``W_std = standardize(W)`` per output channel
  (zero mean -> balanced signs -> maximal information entropy; unbiased std), then
  ``sign(W_std) * 2^round(log2 mean|W_std|)``, the power-of-two scale detached as in the
  official code (``round`` has zero gradient anyway; a bit shift at inference; after
  standardisation it is nearly always 1).
* Activations (:class:`EdeSign`): ``sign(x)``, no standardisation or scale.
* Both backward with the Error Decay Estimator ``k t (1 - tanh^2(t x))``
  (:func:`~onebit.quant.functional.ede_grad`), ``t`` from the engine's log-linear schedule
  and ``k = max(1/t, 1)``.

Temperature range: the paper, the VGG-Small and the ResNet-20 1w32a scripts use
``Tmin = 1e-1, Tmax = 10`` (the method's default, ``Method.temperature_range``); the CIFAR-10
ResNet-20 1w1a script that produced 86.5% uses ``Tmin = 1e-3``: set it in that recipe.
"""
from __future__ import annotations

import torch

from onebit.quant.base import Quantizer, register_quantizer
from onebit.quant.functional import channel_shape, ede_grad, sign_with_surrogate, standardize
from onebit.quant.schedules import surrogate_scale

__all__ = ["EdeSign", "LibraPBWeight"]


class _EdeScheduled(Quantizer):
    """Holds IR-Net's ``t`` and ``k`` (non-persistent buffers, set by the engine every epoch)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("t", torch.tensor(0.1), persistent=False)  # reference placeholders
        self.register_buffer("k", torch.tensor(10.0), persistent=False)

    def set_temperature(self, t: float) -> None:
        self.t.fill_(t)
        self.k.fill_(surrogate_scale(t))


@register_quantizer("ede_sign")
class EdeSign(_EdeScheduled):
    """IR-Net's activation binarization: ``sign(x)``, EDE backward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sign_with_surrogate(x, ede_grad, self.k, self.t)


@register_quantizer("libra_pb")
class LibraPBWeight(_EdeScheduled):
    """IR-Net's Libra Parameter Binarization of the weights, EDE backward."""

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        w = standardize(w)
        mean_abs = w.detach().abs().reshape(w.shape[0], -1).mean(1)
        scale = torch.pow(2.0, torch.round(torch.log2(mean_abs))).reshape(channel_shape(w))
        return sign_with_surrogate(w, ede_grad, self.k, self.t) * scale
