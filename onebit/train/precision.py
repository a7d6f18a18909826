"""Mixed-precision training (``--amp``; seed 003's ``--half`` maps onto it).

Training forward passes run under ``torch.autocast`` with bfloat16, on the CPU and on CUDA
(bfloat16 has float32's exponent range: no loss scaling is needed; GPUs older than Ampere lack
it). The weights, their gradients and the optimizer state stay float32. Seed 003's trainer
instead casts the whole model to float16 (``model.half()``); autocast keeps the float32 master
weights that such a cast loses. Binarized tensors (+-1) are exact in bfloat16. Evaluation runs
in float32, the numbers the exported network reproduces.
"""
from __future__ import annotations

from contextlib import nullcontext

import torch

__all__ = ["MixedPrecision"]


class MixedPrecision:
    def __init__(self, enabled: bool, device: torch.device):
        self.enabled = bool(enabled)
        self.device_type = device.type
        self.dtype = torch.bfloat16

    def autocast(self):
        """The context of a training forward pass."""
        if not self.enabled:
            return nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def describe(self) -> str:
        return "mixed precision: autocast to bfloat16" if self.enabled else ""
