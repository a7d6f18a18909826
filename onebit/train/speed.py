"""The fast training path (the default) and its switches.

A binary network's training step is mostly small elementwise quantizer kernels (standardise,
rotate, sign, surrogate gradients) that eager PyTorch runs one at a time. The default path:

* ``torch.compile`` (inductor) of the training forward, and through AOTAutograd of its
  backward, fusing those kernels. The last, smaller batch of an epoch runs eagerly rather
  than paying a second compilation. Evaluation stays eager. Compilation costs from ~10 s
  (warm on-disk cache) to minutes (a first run on a busy machine), so by default a run
  compiles only when it trains at least ``COMPILE_MIN_MACS`` multiply-accumulates
  (forward, over all epochs); ``--compile``/``--no-compile`` force the choice. The rule
  depends on the config alone, so a resumed run takes the same path.
* channels-last memory format of the model and its input images (``--no-channels_last``).
* compiled CPU kernels (``onebit.quant.kernels``) for the quantizers that have one
  (``use_fused_kernel``: RBNN's activations), which ``torch.compile`` keeps as opaque ops: its
  own code for their per-sample reductions is slower than eager PyTorch's. Where the kernels
  are not built, or on another device, the quantizers run their torch ops.
* with those kernels, hardtanh's gradient without boolean masks in compiled graphs
  (:func:`use_float_hardtanh_backward`).
* metrics summed on the device and read every ``--print_freq`` batches and at the end of the
  epoch: no host synchronisation per step (the engine's loop).
* on the CPU, freed memory kept in the process for the next step (:func:`keep_freed_cpu_memory`).

``--eager`` turns all of it off: the plain path, as the seeds' code runs (and as onebit did
before), to check a result against. bfloat16 autocast (onebit.train.precision) is part of the
default path where the device computes bfloat16 natively (``--no-amp`` turns it off).
"""
from __future__ import annotations

import ctypes
from typing import Any, Callable

import torch
from torch import nn

from onebit.quant import kernels

__all__ = ["COMPILE_MIN_MACS", "SpeedOptions", "hardtanh_backward", "keep_freed_cpu_memory",
           "use_float_hardtanh_backward"]

COMPILE_MIN_MACS = 1e12
"""Training MACs from which compiling pays by default: ~25,000 CIFAR images through
resnet20_1w1a (40M MACs each), where the compiled steps (1.3-1.9x faster, BENCHMARKS.md)
win back a compilation of tens of seconds."""


def hardtanh_backward(grad: torch.Tensor, x: torch.Tensor, min_val: float, max_val: float) -> torch.Tensor:
    """``aten.hardtanh_backward`` (``grad`` where ``min_val < x < max_val``, else 0) in float arithmetic."""
    return grad * torch.clamp_min(torch.sign(x - min_val) * torch.sign(max_val - x), 0.0)


def use_float_hardtanh_backward() -> bool:
    """Make inductor decompose ``hardtanh_backward`` with :func:`hardtanh_backward` in this process.

    Its own decomposition is a ``where`` on a boolean mask, which the partitioner computes in the
    forward graph and saves for the backward; inductor's vectorised CPU code for boolean tensors is
    slow (4M values: 38 ms, against 2.5 ms for the same mask in float32, torch 2.14, 1 thread). The
    binary ResNets put a hardtanh after every block. Used where quantizers run compiled kernels
    (RBNN: the step gets ~20% faster; its kernel saves the hardtanh's output anyway); on IR-Net's graph
    it measured 0-9% slower, so not there. Compiled graphs only (eager runs aten's kernel); takes
    effect for graphs compiled afterwards in the process. The tables are inductor internals (torch
    2.14): where a torch version lacks them, nothing changes and this returns False.
    """
    from torch._inductor import decomposition

    tables = getattr(decomposition, "decompositions", None), getattr(decomposition, "fast_random_decomps", None)
    if not isinstance(tables[0], dict) or not callable(tables[1]):
        return False
    op = torch.ops.aten.hardtanh_backward.default
    tables[0][op] = hardtanh_backward
    tables[1]()[op] = hardtanh_backward  # the table inductor reads, built once
    return True


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
MMAP_THRESHOLD = 32 << 20  # glibc's upper limit for it on 64-bit systems


def keep_freed_cpu_memory() -> bool:
    """Make glibc's malloc keep freed memory in the process (for this process, from now on).

    PyTorch's CPU tensors come from malloc. By default glibc serves blocks above a threshold that
    adapts up to 32 MiB with fresh memory maps and returns freed memory at the top of its heap to
    the kernel, so a training step, which frees and allocates the same activation-sized buffers
    every step, touches new pages over and over (IR-Net's compiled resnet20_1w1a step at batch 256:
    ~220 MiB of page faults, the step 1.29x slower; BENCHMARKS.md). With a fixed 32 MiB threshold
    and no trimming the buffers are reused; the process keeps the memory of its largest step.
    Blocks above 32 MiB are still mapped afresh. Returns False where the C library has no
    ``mallopt`` (not glibc).
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.restype, mallopt.argtypes = ctypes.c_int, [ctypes.c_int, ctypes.c_int]
    return mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, 2**31 - 1) == 1


class SpeedOptions:
    """Which parts of the fast path a run uses (from the config), and the notes to log once."""

    def __init__(self, config: dict[str, Any], device: torch.device):
        eager = bool(config.get("eager", False))
        self.eager = eager
        requested = config.get("compile")
        self.compile: bool | None = None if requested is None and not eager else bool(requested) and not eager
        self.why = "" if eager else "(--compile)" if requested else "(--no-compile)"
        self.channels_last = bool(config.get("channels_last", False)) and not eager
        self.device = device
        self.fused = 0  # quantizers running a compiled kernel (prepare)
        self.kept_memory = not eager and device.type == "cpu" and keep_freed_cpu_memory()
        self.notes: list[str] = []
        if self.compile is not False and torch._dynamo.config.disable:
            self.compile = False
            self.why = "(TORCH_COMPILE_DISABLE=1)"
            self.notes.append("torch.compile is disabled in this process (TORCH_COMPILE_DISABLE=1): training eagerly")

    def prepare(self, model: nn.Module) -> nn.Module:
        """The model in the memory format the run trains in, its quantizers on their compiled kernels
        (except with ``--eager``)."""
        fusable = [m for m in model.modules() if hasattr(m, "use_fused_kernel")]
        wanted = not self.eager and self.device.type == "cpu"
        self.fused = sum(m.use_fused_kernel(wanted) for m in fusable)
        if fusable and wanted and not kernels.available():
            self.notes.append(f"{kernels.unavailable_reason()}: the quantizers run their torch ops")
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def images(self, images: torch.Tensor) -> torch.Tensor:
        """A batch of images in the model's memory format."""
        if self.channels_last and images.dim() == 4:
            return images.contiguous(memory_format=torch.channels_last)
        return images

    def training_forward(self, model: nn.Module, batch_size: int, eager_reason: str = "",
                         training_macs: float | None = None) -> Callable:
        """What the training step calls in place of ``model``: compiled for full batches of
        ``batch_size`` (smaller ones run ``model`` eagerly), or ``model`` itself (no
        ``--compile``, an ``eager_reason`` why this run cannot compile, or, without either
        flag, fewer ``training_macs`` than :data:`COMPILE_MIN_MACS`; unknown: compile)."""
        if self.compile is None:
            self.compile = training_macs is None or training_macs >= COMPILE_MIN_MACS
            if training_macs is not None:
                relation = ">=" if self.compile else "<"
                self.why = (f"(this run trains {training_macs:.2g} MACs {relation} {COMPILE_MIN_MACS:.0e}: compiling "
                            + ("pays" if self.compile else "would cost more than it saves")
                            + "; --compile/--no-compile force the choice)")
        if self.compile and eager_reason:
            self.compile = False
            self.why = f"(off with {eager_reason})"
            self.notes.append(f"torch.compile is off with {eager_reason}: training eagerly")
        if not self.compile:
            return model
        if self.fused:
            use_float_hardtanh_backward()
        compiled = torch.compile(model, dynamic=False)

        def forward(images: torch.Tensor) -> torch.Tensor:
            return compiled(images) if images.shape[0] == batch_size else model(images)

        return forward

    def describe(self) -> str:
        if self.eager:
            return "eager path (--eager): no torch.compile, NCHW, metrics read every batch"
        parts = [("torch.compile " if self.compile else "no torch.compile ") + self.why,
                 "channels-last" if self.channels_last else "NCHW (--no-channels_last)"]
        if self.fused:
            parts.append(f"{self.fused} quantizers on compiled CPU kernels ({kernels.path_name()})")
        if self.kept_memory:
            parts.append("freed CPU memory kept for reuse (malloc)")
        return "training path: " + ", ".join(parts) + ", metrics read every --print_freq batches"
