"""The float operations an exported graph may call, by name (a whitelist: a file never names code).

Float layers run on PyTorch CPU ops (oneDNN). ``max_pool2d`` and ``avg_pool2d`` are PyTorch's, on the
kernels' NCHW implementations (same results; PyTorch's are slow on NCHW). The ``onebit.*`` functions reproduce,
with the same arithmetic, the small real-valued modules of the zoo (:mod:`onebit.layers.activations`)
and the quantizers when they are used outside a binary layer. ``onebit.thermometer``, ``onebit.sign_step``
and ``onebit.level_step`` are the integer steps of fully binary networks (input encoding, thresholds and
fixed-point residuals on a binary layer's accumulator).
"""
from __future__ import annotations

import operator

import torch
import torch.nn.functional as F

from onebit.deploy.pooling import avg_pool2d, max_pool2d
from onebit.layers.encoding import thermometer_bits
from onebit.layers.fixed_point import fixed_point

__all__ = ["FUNCTIONS", "METHODS", "function_name"]


def _per_channel(p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return p.view(1, -1, *([1] * (x.dim() - 2)))


def add_channel(x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """:class:`~onebit.layers.activations.LearnableBias`."""
    return x + _per_channel(bias, x)


def rprelu(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, zeta: torch.Tensor) -> torch.Tensor:
    """:class:`~onebit.layers.activations.RPReLU`."""
    return F.prelu(x - _per_channel(gamma, x), beta) + _per_channel(zeta, x)


def learned_scale(x: torch.Tensor, channel: torch.Tensor, row: torch.Tensor | None,
                  column: torch.Tensor | None) -> torch.Tensor:
    """:class:`~onebit.layers.scale.LearnedScale` (the same multiplications in the same order)."""
    x = x * channel
    return x if row is None else x * row[: x.shape[-2]] * column[: x.shape[-1]]


def batch_norm_affine(x: torch.Tensor, affine: torch.Tensor) -> torch.Tensor:
    """An eval-mode BatchNorm stored as its per-channel ``affine = [alpha, beta]`` (2 numbers per
    channel instead of 4), computed by PyTorch's own BatchNorm kernel: with mean 0, variance 1
    and eps 0 the kernel's ``alpha`` and ``beta`` are exactly the stored ones, so the outputs are
    those of the original BatchNorm, bit for bit."""
    alpha, beta = affine[0], affine[1]
    return F.batch_norm(x, torch.zeros_like(alpha), torch.ones_like(alpha), alpha, beta, False, 0.0, 0.0)


def sign_threshold(x: torch.Tensor, threshold: torch.Tensor | None, sample_mean: bool) -> torch.Tensor:
    """``sign(x - t)`` in {-1, +1} (sign(0) = +1), t per channel, 0, or each sample's mean."""
    if sample_mean:
        t = x.mean(tuple(range(1, x.dim())), keepdim=True)
    elif threshold is None:
        return torch.where(x >= 0, 1.0, -1.0)
    else:
        t = _per_channel(threshold, x)
    return torch.where(x >= t, 1.0, -1.0)


def sign_step(x: torch.Tensor, thresholds: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """The +-1 output of a binary layer whose real-valued tail (offset / BatchNorm, activation) only
    feeds signs: ``+1`` where ``(x >= t) != flip``, ``x`` the integer accumulator (exact in float32,
    maybe max-pooled) and ``t`` ``[1, C]`` integer thresholds."""
    return torch.where((x >= _per_channel(thresholds[0], x)) != _per_channel(flip[0], x).bool(), 1.0, -1.0)


def level_step(x: torch.Tensor, base: torch.Tensor, thresholds: torch.Tensor, levels: int, low: int | None,
               high: int | None, residual: torch.Tensor | None = None) -> torch.Tensor:
    """The fixed-point output of a binary layer on a residual stream (:class:`~onebit.layers.FixedPoint`),
    in integers: ``clamp(L + levels * residual, low, high) / levels`` with ``L = base[c] + #{j: x >= t[c, j]}``
    the rounded branch in units of ``1/levels`` (a staircase in the integer accumulator ``x``;
    ``thresholds`` ``[C, m]`` sorted) and the residual a multiple of ``1/levels`` (exact in float32)."""
    channels = x.shape[1]
    flat = x.transpose(0, 1).reshape(channels, -1).to(torch.int32)
    steps = torch.searchsorted(thresholds, flat, right=True).to(torch.int32)  # thresholds <= x
    value = (steps + base[:, None]).reshape(channels, x.shape[0], *x.shape[2:]).transpose(0, 1)
    if residual is not None:
        value = value + (residual * levels).to(torch.int32)
    if low is not None or high is not None:
        value = value.clamp(low, high)
    return value.to(torch.float32) / levels


FUNCTIONS = {
    "add": operator.add, "sub": operator.sub, "mul": operator.mul, "truediv": operator.truediv,
    "neg": operator.neg, "getitem": operator.getitem,
    "torch.add": torch.add, "torch.sub": torch.sub, "torch.mul": torch.mul, "torch.cat": torch.cat,
    "torch.flatten": torch.flatten, "torch.mean": torch.mean, "torch.sigmoid": torch.sigmoid,
    "torch.tanh": torch.tanh, "torch.relu": torch.relu, "torch.chunk": torch.chunk, "torch.split": torch.split,
    "torch.where": torch.where, "torch.clamp": torch.clamp,
    "conv2d": F.conv2d, "linear": F.linear, "batch_norm": F.batch_norm, "pad": F.pad,
    "relu": F.relu, "relu6": F.relu6, "hardtanh": F.hardtanh, "prelu": F.prelu, "leaky_relu": F.leaky_relu,
    "gelu": F.gelu, "silu": F.silu, "softmax": F.softmax, "dropout": F.dropout,
    "max_pool2d": max_pool2d, "avg_pool2d": avg_pool2d, "adaptive_avg_pool2d": F.adaptive_avg_pool2d,
    "adaptive_max_pool2d": F.adaptive_max_pool2d,
    "onebit.add_channel": add_channel, "onebit.rprelu": rprelu, "onebit.learned_scale": learned_scale,
    "onebit.sign_threshold": sign_threshold, "onebit.batch_norm_affine": batch_norm_affine,
    "onebit.thermometer": thermometer_bits, "onebit.sign_step": sign_step,
    "onebit.level_step": level_step, "onebit.fixed_point": fixed_point,
}

METHODS = {
    "flatten", "view", "reshape", "size", "mean", "sum", "contiguous", "add", "sub", "mul", "div", "permute",
    "transpose", "squeeze", "unsqueeze", "float", "clamp", "chunk", "expand", "repeat", "relu", "sigmoid", "t",
}

_NAMES = {id(fn): name for name, fn in FUNCTIONS.items()}
_NAMES[id(F.max_pool2d)] = "max_pool2d"
_NAMES[id(F.avg_pool2d)] = "avg_pool2d"


def function_name(fn) -> str | None:
    """The whitelist name of a traced function (None if it is not whitelisted)."""
    return _NAMES.get(id(fn))
