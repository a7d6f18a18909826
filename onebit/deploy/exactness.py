"""Whether a fast computation gives a reference computation's results, checked once per case.

The rounding of a convolution on the CPU depends on the algorithm the library picks for a case (shapes,
arguments, thread count, code path), not on the values. So a fast route that claims to round the same way is
compared with the reference once per case, bit for bit, on a seeded random input of the case's shape, and
the answer is remembered; the reference runs for the cases where they differ.
"""
from __future__ import annotations

from typing import Callable, Hashable

import torch

__all__ = ["ExactnessCheck"]


class ExactnessCheck:
    """``check(key, shape, fast, reference)``: does ``fast(probe)`` equal ``reference(probe)`` bit for bit, for
    a random ``probe`` of ``shape`` (``fast`` may return None: not available, counts as different)? Asked
    once per ``key``; at most ``limit`` answers are kept (``answers``: those so far, by key)."""

    def __init__(self, limit: int = 256):
        self.limit = limit
        self.answers: dict[Hashable, bool] = {}

    def __call__(self, key: Hashable, shape: tuple[int, ...], fast: Callable[[torch.Tensor], torch.Tensor | None],
                 reference: Callable[[torch.Tensor], torch.Tensor]) -> bool:
        exact = self.answers.get(key)
        if exact is None:
            probe = torch.randn(shape, generator=torch.Generator().manual_seed(0))
            got = fast(probe)
            exact = got is not None and torch.equal(got, reference(probe))
            if len(self.answers) >= self.limit:
                self.answers.clear()
            self.answers[key] = exact
        return exact
