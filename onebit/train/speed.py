"""The fast training path (the default) and its switches.

A binary network's training step is mostly small elementwise quantizer kernels (standardise,
rotate, sign, surrogate gradients) that eager PyTorch runs one at a time. The default path:

* ``torch.compile`` (inductor) of the training forward, and through AOTAutograd of its
  backward, fusing those kernels (``--no-compile``). The last, smaller batch of an epoch runs
  eagerly rather than paying a second compilation. Evaluation stays eager.
* channels-last memory format of the model and its input images (``--no-channels_last``).
* metrics summed on the device and read every ``--print_freq`` batches and at the end of the
  epoch: no host synchronisation per step (the engine's loop).

``--eager`` turns all of it off: the plain path, as the seeds' code runs (and as onebit did
before), to check a result against. ``--amp`` (precision.py) adds bfloat16 autocast.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

__all__ = ["SpeedOptions"]


class SpeedOptions:
    """Which parts of the fast path a run uses (from the config), and the notes to log once."""

    def __init__(self, config: dict[str, Any], device: torch.device):
        eager = bool(config.get("eager", False))
        self.eager = eager
        self.compile = bool(config.get("compile", False)) and not eager
        self.channels_last = bool(config.get("channels_last", False)) and not eager
        self.device = device
        self.notes: list[str] = []
        if self.compile and torch._dynamo.config.disable:
            self.compile = False
            self.notes.append("torch.compile is disabled in this process (TORCH_COMPILE_DISABLE=1): training eagerly")

    def prepare(self, model: nn.Module) -> nn.Module:
        """The model in the memory format the run trains in."""
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def images(self, images: torch.Tensor) -> torch.Tensor:
        """A batch of images in the model's memory format."""
        if self.channels_last and images.dim() == 4:
            return images.contiguous(memory_format=torch.channels_last)
        return images

    def training_forward(self, model: nn.Module, batch_size: int, eager_reason: str = "") -> Callable:
        """What the training step calls in place of ``model``: compiled for full batches of
        ``batch_size`` (smaller ones run ``model`` eagerly), or ``model`` itself (no
        ``--compile``, or an ``eager_reason`` why this run cannot compile)."""
        if self.compile and eager_reason:
            self.compile = False
            self.notes.append(f"torch.compile is off with {eager_reason}: training eagerly")
        if not self.compile:
            return model
        compiled = torch.compile(model, dynamic=False)

        def forward(images: torch.Tensor) -> torch.Tensor:
            return compiled(images) if images.shape[0] == batch_size else model(images)

        return forward

    def describe(self) -> str:
        if self.eager:
            return "eager path (--eager): no torch.compile, NCHW, metrics read every batch"
        parts = ["torch.compile" if self.compile else "no torch.compile (--no-compile)",
                 "channels-last" if self.channels_last else "NCHW (--no-channels_last)"]
        return "training path: " + ", ".join(parts) + ", metrics read every --print_freq batches"
