"""Small helpers shared across the package."""
from __future__ import annotations

import argparse
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


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a 'did you mean' hint for unknown flags."""

    def parse_args(self, args=None, namespace=None):
        ns, unknown = self.parse_known_args(args, namespace)
        if unknown:
            flags = [s for a in self._actions for s in a.option_strings]
            hints = []
            for u in unknown:
                flag = u.split("=")[0]
                close = difflib.get_close_matches(flag, flags, n=1, cutoff=0.6) if flag.startswith("-") else []
                hints.append(f"{u!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            self.error("unknown argument(s): " + ", ".join(hints))
        return ns
