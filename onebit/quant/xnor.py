r"""XNOR-Net weights (Rastegari et al., ECCV 2016), with the paper's gradient.

Forward ``alpha_o sign(W)``, ``alpha_o = ||W_o||_1 / n`` per output filter
(``n = C_in k_h k_w``). Backward (paper, Sec. 3.2):

.. math:: \partial C / \partial W = \partial C / \partial \widetilde W \, (1/n + \alpha_o 1_{|W| \le 1})

(the derivative of ``alpha`` through its own element; the cross terms are dropped, as in
the paper). Activations are ``sign`` with the clipped STE (:class:`~onebit.quant.SteSign`).
The paper's activation scale map ``K`` (mean |input| over channels, box-filtered) is not
applied: like Bi-Real, ReActNet and the mmcls zoo, we let the following BatchNorm absorb
it, which keeps the binary layer a pure XNOR-popcount.

XNOR-Net++ (Bulat & Tzimiropoulos, BMVC 2019) needs no quantizer of its own: clipped-STE
signs for both operands and a learned output scale (:class:`onebit.quant.scale.LearnedScale`).
"""
from __future__ import annotations

from functools import partial

import torch

from onebit.quant.base import Quantizer, register_quantizer
from onebit.quant.functional import channel_mean_abs, scaled_sign_with_surrogate

__all__ = ["XnorWeight"]


def _xnor_grad(x: torch.Tensor, alpha: torch.Tensor, inv_n: float) -> torch.Tensor:
    return (x.abs() <= 1.0).to(x.dtype).mul_(alpha).add_(inv_n)


@register_quantizer("xnor_weight")
class XnorWeight(Quantizer):
    """``mean|W_o| * sign(W)`` with the gradient ``g (1/n + alpha_o 1[|W| <= 1])``."""

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        n = w[0].numel()
        alpha = channel_mean_abs(w)
        return scaled_sign_with_surrogate(w, alpha, partial(_xnor_grad, inv_n=1.0 / n), alpha)
