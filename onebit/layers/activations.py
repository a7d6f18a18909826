"""Real-valued pieces of the binary architectures: learnable shifts, RPReLU, learned output
scales, the data-driven channel gate, and the activations chosen by name.

Formulas: ReActNet's RSign shift and RPReLU (Liu et al. 2020) and Real-to-Binary's gate
(Martinez et al. 2020), as their papers and official code define them (each class says how).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LearnableBias", "RPReLU", "ChannelGate", "activation", "ACTIVATIONS"]


def _per_channel(p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """View a ``[C]`` parameter so that it broadcasts over ``x``'s dimension 1."""
    return p.view(1, -1, *([1] * (x.dim() - 2)))


class LearnableBias(nn.Module):
    """``x + b`` with one learnable ``b`` per channel, initialised to 0.

    Placed before a sign it is ReActNet's RSign: ``sign(x + b) = sign(x - alpha)``
    with the learned threshold ``alpha = -b``.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + _per_channel(self.bias, x)


class RPReLU(nn.Module):
    r"""ReActNet's RPReLU: :math:`y = \mathrm{PReLU}_\beta(x - \gamma) + \zeta`.

    That is ``x - gamma + zeta`` where ``x > gamma`` and ``beta * (x - gamma) + zeta``
    elsewhere; per-channel ``gamma``, ``zeta`` (init 0) and slope ``beta`` (init 0.25, as
    ``nn.PReLU``).
    """

    def __init__(self, channels: int, slope: float = 0.25):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(channels))
        self.beta = nn.Parameter(torch.full((channels,), float(slope)))
        self.zeta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.prelu(x - _per_channel(self.gamma, x), self.beta) + _per_channel(self.zeta, x)


class ChannelGate(nn.Module):
    """Real-to-Binary data-driven channel re-scaling .

    ``y * sigmoid(W2 relu(W1 GAP(a)))`` per sample and output channel, where ``a`` is the
    *real-valued* input of the binary convolution (the paper and larq; mmcls computes the
    gate from the conv output instead). ``W1: C_in -> C_in/r``, ``W2 -> C_out``, no biases
    (larq), reduction ``r = 8``.
    """

    def __init__(self, in_channels: int, out_channels: int, reduction: int = 8):
        super().__init__()
        hidden = max(in_channels // reduction, 1)
        self.squeeze = nn.Linear(in_channels, hidden, bias=False)
        self.expand = nn.Linear(hidden, out_channels, bias=False)

    def forward(self, y: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.expand(F.relu(self.squeeze(a.mean(dim=(2, 3))))))
        return y * gate[:, :, None, None]


ACTIVATIONS = ("none", "hardtanh", "relu", "prelu", "rprelu")


def activation(name: str, channels: int) -> nn.Module:
    """The real activation ``name`` (one of ``ACTIVATIONS``) for ``channels`` channels."""
    if name == "none":
        return nn.Identity()
    if name == "hardtanh":
        return nn.Hardtanh()
    if name == "relu":
        return nn.ReLU()
    if name == "prelu":
        return nn.PReLU(channels)
    if name == "rprelu":
        return RPReLU(channels)
    raise ValueError(f"unknown activation {name!r} (choose from: {', '.join(ACTIVATIONS)})")
