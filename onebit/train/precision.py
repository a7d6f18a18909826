"""Mixed-precision training (``--amp``; seed 003's ``--half`` maps onto it).

Training forward passes run under ``torch.autocast``: bfloat16 on the CPU, float16 on CUDA with
dynamic loss scaling (``torch.amp.GradScaler``). The weights, their gradients and the
optimizer state stay float32. Seed 003's trainer instead casts the whole model to float16
(``model.half()``); autocast keeps the float32 master weights that such a cast loses.
Binarized tensors (+-1) are exact in either 16-bit type. Evaluation runs in float32, the
numbers the exported network reproduces.
"""
from __future__ import annotations

from contextlib import nullcontext

import torch

__all__ = ["MixedPrecision"]


class MixedPrecision:
    def __init__(self, enabled: bool, device: torch.device):
        self.enabled = bool(enabled)
        self.device_type = device.type
        self.dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
        self.scaler = torch.amp.GradScaler("cuda") if self.enabled and device.type == "cuda" else None

    def autocast(self):
        """The context of a forward pass."""
        if not self.enabled:
            return nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def backward_step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """Backward pass and optimizer step (loss-scaled on CUDA float16)."""
        if self.scaler is None:
            loss.backward()
            optimizer.step()
            return
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict:
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)

    def describe(self) -> str:
        return f"mixed precision: autocast to {str(self.dtype).removeprefix('torch.')}" if self.enabled else ""
