"""Mixed-precision training (``--amp``/``--no-amp``; seed 003's ``--half`` maps onto ``--amp``).

Training forward passes run under ``torch.autocast`` with bfloat16, on the CPU and on CUDA
(bfloat16 has float32's exponent range: no loss scaling is needed; GPUs older than Ampere lack
it). The weights, their gradients and the optimizer state stay float32. Seed 003's trainer
instead casts the whole model to float16 (``model.half()``); autocast keeps the float32 master
weights that such a cast loses. Binarized tensors (+-1) are exact in bfloat16, so the binary
convolutions' forward products are too; their sums, the BatchNorms and the gradients are rounded
to bfloat16. Evaluation runs in float32, the numbers the exported network reproduces.

It is part of the default training path where the device computes bfloat16 natively (CPU:
AVX-512 BF16 or AMX): the binary networks' convolutions are the larger part of a step, and
bfloat16 runs them ~2x faster at the same accuracy (BENCHMARKS.md); ``--no-amp`` and
``--eager`` train in float32. A CPU without native bfloat16 (e.g. AMD Zen 3, AVX2 only) would
emulate it, slower than float32: there the default and ``--amp`` train in float32 and say so.
"""
from __future__ import annotations

from contextlib import nullcontext

import torch

__all__ = ["MixedPrecision", "native_bfloat16"]


def native_bfloat16(device: torch.device) -> bool:
    """The device computes in bfloat16 natively (CPU: AVX-512 BF16 or AMX; CUDA: Ampere or later)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        cpu = torch.cpu
        return any(getattr(cpu, name, lambda: False)() for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    return True


class MixedPrecision:
    """Whether a run trains under bfloat16 autocast: ``requested`` True (``--amp``), False (``--no-amp``) or
    None (the default: where the device has native bfloat16, unless ``eager``)."""

    def __init__(self, requested: bool | None, device: torch.device, eager: bool = False):
        self.device_type = device.type
        self.dtype = torch.bfloat16
        self.requested = requested
        wanted = (not eager) if requested is None else bool(requested)
        self.fallback = wanted and not native_bfloat16(device)
        self.enabled = wanted and not self.fallback

    def autocast(self):
        """The context of a training forward pass."""
        if not self.enabled:
            return nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def describe(self) -> str:
        """The log line (empty for a float32 run that asked for it)."""
        if self.fallback:
            flag = "--amp" if self.requested else "mixed precision (default path)"
            return (f"{flag}: this {self.device_type.upper()} has no native bfloat16 (AVX-512 BF16 / AMX on a CPU): "
                    "training in float32")
        if self.enabled:
            why = "--amp" if self.requested else f"default where the {self.device_type.upper()} has native bfloat16; --no-amp: float32"
            return f"mixed precision: autocast to bfloat16 ({why})"
        return ""
