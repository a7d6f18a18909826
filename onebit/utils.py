"""Small helpers shared across the package."""
from __future__ import annotations

import difflib
from typing import Iterable


def suggest(name: str, choices: Iterable[str]) -> str:
    """A ' (did you mean X?)' suffix naming the closest valid choice, or the valid choices."""
    choices = sorted(choices)
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    if close:
        return f" (did you mean {close[0]!r}?)"
    shown = ", ".join(choices[:12]) + (", ..." if len(choices) > 12 else "")
    return f" (choose from: {shown})"
