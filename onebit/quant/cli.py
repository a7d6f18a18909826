"""``onebit methods``: the binarization methods with their options and defaults."""
from __future__ import annotations


def add_arguments(parser) -> None:
    pass


def main(args) -> int:
    from onebit.quant import list_methods

    for m in list_methods():
        options = ", ".join(f"{k}={v!r}" for k, v in m.options().items()) or "-"
        temperature = f"  Tmin/Tmax {m.temperature_range[0]:g}/{m.temperature_range[1]:g}" if m.temperature_range else ""
        print(f"{m.name:<9} {m.description}\n{'':<9} options: {options}{temperature}")
    return 0
