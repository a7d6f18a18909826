"""Per-epoch schedules of the surrogate gradients' temperature."""
from __future__ import annotations

import math


def log_linear_temperature(epoch: int, epochs: int, tmin: float, tmax: float) -> float:
    """RBNN / IR-Net: ``t(e) = 10 ** (log10 Tmin + (log10 Tmax - log10 Tmin) * e / E)``."""
    lo, hi = math.log10(tmin), math.log10(tmax)
    return 10 ** (lo + (hi - lo) * epoch / epochs)
