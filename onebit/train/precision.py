"""Mixed-precision training (``--amp``; seed 003's ``--half`` maps onto it).

Training forward passes run under ``torch.autocast`` with bfloat16, on the CPU and on CUDA
(bfloat16 has float32's exponent range: no loss scaling is needed; GPUs older than Ampere lack
it). The weights, their gradients and the optimizer state stay float32. Seed 003's trainer
instead casts the whole model to float16 (``model.half()``); autocast keeps the float32 master
weights that such a cast loses. Binarized tensors (+-1) are exact in bfloat16. Evaluation runs
in float32, the numbers the exported network reproduces.

A CPU without native bfloat16 arithmetic (AVX-512 BF16 or AMX; e.g. AMD Zen 3, AVX2 only)
would emulate it, slower than float32: there ``--amp`` falls back to float32 and says so.
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
    def __init__(self, enabled: bool, device: torch.device):
        self.device_type = device.type
        self.dtype = torch.bfloat16
        self.fallback = bool(enabled) and not native_bfloat16(device)
        self.enabled = bool(enabled) and not self.fallback

    def autocast(self):
        """The context of a training forward pass."""
        if not self.enabled:
            return nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def describe(self) -> str:
        if self.fallback:
            return (f"--amp: this {self.device_type.upper()} has no native bfloat16 (AVX-512 BF16 / AMX on a CPU): "
                    "training in float32")
        return "mixed precision: autocast to bfloat16" if self.enabled else ""
