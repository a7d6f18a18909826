"""Sign with a surrogate gradient: the one primitive every 1-bit quantizer is built on.

Convention (used in training *and* by the exported 1-bit runtime): ``sign(0) = +1``.
A value is mapped to -1 only when it is strictly negative, so every binarized tensor
holds exactly two values and is representable in bits. ``torch.sign`` (which returns 0
for 0) is never used on a path that is meant to be binary; the accuracy impact of the
choice is nil in practice, since exact zeros are measure-zero after BN.
"""
from __future__ import annotations

from typing import Callable

import torch

Derivative = Callable[..., torch.Tensor]


def sign(x: torch.Tensor) -> torch.Tensor:
    """+1 where ``x >= 0``, -1 elsewhere (never 0), in ``x``'s dtype."""
    return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)


class _SignWithSurrogate(torch.autograd.Function):
    """Forward ``sign(x)``; backward ``grad * derivative(x, *params)``.

    ``params`` are tensors the derivative needs (a temperature ``t``, a scale ``k``...);
    they receive no gradient. Only ``x`` is saved, not the output, to keep memory low.
    """

    @staticmethod
    def forward(ctx, x, derivative, *params):
        ctx.derivative = derivative
        ctx.save_for_backward(x, *params)
        return sign(x)

    @staticmethod
    def backward(ctx, grad_output):
        x, *params = ctx.saved_tensors
        grad = grad_output * ctx.derivative(x, *params).to(grad_output.dtype)
        return (grad, None, *([None] * len(params)))


def sign_with_surrogate(x: torch.Tensor, derivative: Derivative, *params: torch.Tensor) -> torch.Tensor:
    """``sign(x)`` in the forward pass, ``derivative(x, *params)`` as its gradient."""
    return _SignWithSurrogate.apply(x, derivative, *params)


def clipped_identity_grad(x: torch.Tensor, clip: torch.Tensor) -> torch.Tensor:
    """Straight-through estimator gradient, cancelled outside ``|x| <= clip`` (Hubara et al. 2016)."""
    return (x.abs() <= clip).to(x.dtype)
