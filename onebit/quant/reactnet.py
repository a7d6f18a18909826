r"""ReActNet's RSign (Liu et al., ECCV 2020) as a quantizer: a sign with a learnable per-channel threshold.

.. math:: q(x) = \operatorname{sign}(x - \alpha_c), \qquad
          \partial L / \partial \alpha_c = -\textstyle\sum_{n,h,w} g \cdot F'(x - \alpha_c)

with ``F'`` Bi-Real's ApproxSign derivative ``max(0, 2 - 2|.|)``. The official code puts the shift
in the model instead, a learnable bias ``b = -alpha`` (``LearnableBias``, init 0) before a plain
ApproxSign; the ReActNet models do the same (:mod:`onebit.models.resarch`,
:mod:`onebit.models.mobilenet`), and so the ``reactnet`` method's activations are
:class:`~onebit.quant.quantizers.ApproxSign` (one shift per sign, as in the reference). ``RSign``
gives the shift to any other layer: ``BinaryConv2d(..., input_quantizer="rsign")``. With
``sign(0) = +1`` an input equal to its threshold maps to +1.
"""
from __future__ import annotations

import torch
from torch import nn

from onebit.quant.base import Quantizer, register_quantizer
from onebit.quant.functional import approx_sign_grad, input_channel_shape, sign_with_surrogate

__all__ = ["RSign"]


@register_quantizer("rsign")
class RSign(Quantizer):
    """``sign(x - threshold)`` with one learnable threshold per input channel (sized by ``build``)."""

    def build(self, layer: nn.Module) -> None:
        self.threshold = nn.Parameter(torch.zeros(input_channel_shape(layer), device=layer.weight.device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sign_with_surrogate(x - self.threshold, approx_sign_grad)

    def export_threshold(self) -> torch.Tensor:
        return self.threshold
