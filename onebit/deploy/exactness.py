"""Whether a fast computation gives a reference computation's results, checked once per case.

The rounding of a convolution on the CPU depends on the algorithm the library picks for a case (shapes,
arguments, thread count, code path), not on the values. So a fast route that claims to round the same way is
compared with the reference once per case, bit for bit, on a seeded random input of the case's shape, and
the answer is remembered; the reference runs for the cases where they differ.
"""
from __future__ import annotations

from typing import Callable, Hashable, Iterable

import torch

__all__ = ["ExactnessCheck"]

Fast = Callable[[torch.Tensor], "torch.Tensor | None"]


class ExactnessCheck:
    """``check(key, shape, fast, reference)``: does ``fast(probe)`` equal ``reference(probe)`` bit for bit, for
    a random ``probe`` of ``shape`` (``fast`` may return None: not available, counts as different)?
    ``check.first(key, shape, candidates, reference)``: the index of the first candidate that does (None: none).
    Asked once per ``key``; at most ``limit`` answers are kept (``answers``: the indices so far, by key)."""

    def __init__(self, limit: int = 256):
        self.limit = limit
        self.answers: dict[Hashable, int | None] = {}

    def __call__(self, key: Hashable, shape: tuple[int, ...], fast: Fast,
                 reference: Callable[[torch.Tensor], torch.Tensor]) -> bool:
        return self.first(key, shape, (fast,), reference) == 0

    def first(self, key: Hashable, shape: tuple[int, ...], candidates: Iterable[Fast],
              reference: Callable[[torch.Tensor], torch.Tensor]) -> int | None:
        if key in self.answers:
            return self.answers[key]
        probe = torch.randn(shape, generator=torch.Generator().manual_seed(0))
        expected = reference(probe)
        found = None
        for i, fast in enumerate(candidates):
            got = fast(probe)
            if got is not None and torch.equal(got, expected):
                found = i
                break
        if len(self.answers) >= self.limit:
            self.answers.clear()
        self.answers[key] = found
        return found
