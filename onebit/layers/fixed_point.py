"""Fixed-point rounding of a real value, for the residual streams of fully binary networks.

:class:`FixedPoint` rounds ``x`` to the nearest multiple of ``1 / levels`` (``levels`` a power of two,
ties to even as ``torch.round``) with a straight-through gradient. Values on that grid stay exact
in float32 under additions and clamps, so a network whose real-valued paths carry only such values
computes the same numbers as an integer implementation in units of ``1 / levels``.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["FixedPoint", "fixed_point"]


def fixed_point(x: torch.Tensor, levels: int) -> torch.Tensor:
    """``x`` rounded to the nearest multiple of ``1 / levels`` (no gradient)."""
    return torch.round(x * levels) / levels


class FixedPoint(nn.Module):
    def __init__(self, levels: int = 16):
        super().__init__()
        if levels < 1 or levels & (levels - 1):
            raise ValueError(f"levels must be a power of two, got {levels}")
        self.levels = levels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fixed_point(x, self.levels).detach() + (x - x.detach())  # forward: exactly the rounded value; backward: identity

    def extra_repr(self) -> str:
        return f"levels={self.levels}"
