r"""IE-Net (Information Enhanced BNNs, Alexrich961210/IE-Net, 2022): RBNN's layer without the
rotation, plus a dual-shift activation.

Its block computes, with one set of binary weights ``Bw`` and learnable per-input-channel
shifts ``s1, s2`` (init 0) and per-output-channel branch weight ``w`` (init U(0, 1e-3)):

.. math:: y = \alpha \odot \mathrm{conv}(\mathrm{sign}(x + s_1), B_w)
            + w \odot \alpha \odot \mathrm{conv}(\mathrm{sign}(x + s_2), B_w)

``w`` breaks the symmetry of the two shifts (the IR-Net community copy has no ``w``, so its
two shifts get identical gradients forever and collapse into one). Because ``w`` and ``alpha``
are per output channel, this is one convolution over the two binarised copies stacked along
the channels with the weight ``[alpha Bw, w alpha Bw]``: :class:`DualShiftSign` stacks the
inputs, :class:`IeNetWeight` stacks the weights (each detects the other at ``build``; with
``binary_type`` keeping one side real, each falls back to one branch). Padding pads both
copies with the layer's ``pad_value``, as two separate convolutions would.

* Weights: ``(W - mean_o) / sqrt(var_o + 1e-5)`` (unbiased var), ``sign``, backward
  ``k max(0, sqrt3 t - 1.5 t^2 |x|)`` (:func:`~onebit.quant.functional.training_aware_grad`,
  ``c = sqrt 3``), ``k = max(1/t, 1)``; times ``alpha`` (init mean|W| of the default init).
* Activations: per branch, in training ``(x + s) / sqrt(var_sample(x + s) + 1e-5)`` (no mean
  subtraction; only the backward sees it), ``sign``, the same surrogate at ``k = 1, t = max(t, 1)``.
* Temperature: RBNN's schedule, ``Tmin = 1e-2``, ``Tmax = 10``.
"""
from __future__ import annotations

import math
from functools import partial

import torch
from torch import nn

from onebit.quant.base import Quantizer, register_quantizer
from onebit.quant.functional import (
    channel_mean_abs, channel_shape, input_channel_shape, sign_with_surrogate, training_aware_grad,
)
from onebit.quant.schedules import surrogate_scale

__all__ = ["IeNetWeight", "DualShiftSign"]

ienet_grad = partial(training_aware_grad, c=math.sqrt(3.0))


def _check_groups(layer: nn.Module) -> None:
    if getattr(layer, "groups", 1) != 1:
        raise ValueError(f"IE-Net's dual-shift layer needs groups=1, got groups={layer.groups}")


@register_quantizer("ienet_weight")
class IeNetWeight(Quantizer):
    def __init__(self):
        super().__init__()
        self.register_buffer("t", torch.tensor(0.1), persistent=False)
        self.register_buffer("k", torch.tensor(10.0), persistent=False)

    def build(self, layer: nn.Module) -> None:
        w = layer.weight.detach()
        shape = channel_shape(w)
        self.alpha = nn.Parameter(channel_mean_abs(w).clone())
        self.dual = isinstance(getattr(layer, "input_quantizer", None), DualShiftSign)
        if self.dual:
            _check_groups(layer)
            self.branch_weight = nn.Parameter(torch.rand(shape, device=w.device) * 1e-3)

    def set_temperature(self, t: float) -> None:
        self.t.fill_(t)
        self.k.fill_(surrogate_scale(t))

    def quantized_shape(self, shape: torch.Size) -> torch.Size:
        return torch.Size((shape[0], 2 * shape[1], *shape[2:])) if self.dual else shape

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(1, w.dim()))
        w0 = w - w.mean(dims, keepdim=True)
        w1 = w0 / torch.sqrt(w0.var(dims, keepdim=True) + 1e-5)
        bw = sign_with_surrogate(w1, ienet_grad, self.k, self.t) * self.alpha
        return torch.cat([bw, bw * self.branch_weight], dim=1) if self.dual else bw


@register_quantizer("dual_shift_sign")
class DualShiftSign(Quantizer):
    """IE-Net's activations: ``sign(x + s1)`` and ``sign(x + s2)`` stacked along the channels."""

    def __init__(self):
        super().__init__()
        self.register_buffer("t", torch.tensor(1.0), persistent=False)
        self.register_buffer("k", torch.tensor(1.0), persistent=False)

    def build(self, layer: nn.Module) -> None:
        self.branches = 2 if isinstance(getattr(layer, "weight_quantizer", None), IeNetWeight) else 1
        if self.branches == 2:
            _check_groups(layer)
        shape, device = input_channel_shape(layer), layer.weight.device
        self.shifts = nn.ParameterList([nn.Parameter(torch.zeros(shape, device=device)) for _ in range(self.branches)])

    def set_temperature(self, t: float) -> None:
        self.t.fill_(max(t, 1.0))

    def _branch(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            x = x / torch.sqrt(x.var(tuple(range(1, x.dim())), keepdim=True) + 1e-5)
        return sign_with_surrogate(x, ienet_grad, self.k, self.t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self._branch(x + s) for s in self.shifts], dim=1)
