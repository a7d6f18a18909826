"""Multi-process training with ``torchrun``: process group, shards of the global batch, and the
order in which their gradients and batch statistics are summed.

``-b`` is the global batch. Each of the W processes trains on its slice of every global batch
(its shard) and, with ``--sync_bn`` (default), batch norm takes its statistics over the whole
global batch. Float sums depend on their order, so "W processes compute what one does" holds
bit for bit only when the sums are taken in the same order:

* exact (default): every sum over shards (batch-norm statistics and their gradients, parameter
  gradients) is an all-gather followed by a sum in shard order, ``((s0 + s1) + s2) + ...``.
  One process with ``--shards W`` runs the W shards of every global batch in turns (one
  thread per shard, one thread running at a time) and sums in the same order, so the two end
  with bit-identical weights, given the same number of intra-op threads per shard (torchrun
  sets ``OMP_NUM_THREADS=1`` by default).
* plain (``--no-exact_reduce``): DDP's all-reduce, whose order is the backend's; equal to one
  process up to rounding, and binary networks then drift apart over many steps.
"""
from __future__ import annotations

import copy
import faulthandler
import gc
import os
import sys
import threading
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.distributed as dist
from torch import nn


def ordered_sum(parts: Sequence[torch.Tensor]) -> torch.Tensor:
    """``((parts[0] + parts[1]) + parts[2]) + ...``: one fixed order of float additions."""
    total = parts[0].clone()
    for part in parts[1:]:
        total += part
    return total


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, use_cuda: bool) -> "Distributed":
        """Join the process group that ``torchrun`` describes in the environment, if any.

        A process of a group that dies on a signal (e.g. SIGABRT in native code) prints the
        Python stack of every thread first, so that its failure is not only an exit code."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        faulthandler.enable(file=sys.stderr, all_threads=True)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if use_cuda else "gloo")
        return cls(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))

    def sum(self, values: list[float]) -> list[float]:
        """Sum a few numbers over all processes, in rank order (identity in a single process)."""
        if not self.enabled:
            return values
        return ProcessShards(exact=True).sum(torch.tensor(values, dtype=torch.float64)).tolist()

    def broadcast_buffers(self, model: nn.Module) -> None:
        """Give every process rank 0's buffers (e.g. the rotations that RBNN's once-per-epoch
        update computes on rank 0 only)."""
        if self.enabled:
            for buffer in model.buffers():
                dist.broadcast(buffer, src=0)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        """Leave the process group once every process is done with it (a process that tears its
        connections down while another still uses them makes that one fail), and while the
        interpreter is whole: a DDP wrapper left in a reference cycle holds the group, and its
        destruction during interpreter shutdown would run the backend's threads without Python."""
        if self.enabled and dist.is_initialized():
            gc.collect()
            dist.barrier()
            dist.destroy_process_group()


# ---------------------------------------------------------------------- shards of a global batch

class ProcessShards:
    """One shard per process of the group; the sum over shards is ordered (all-gather, then
    ``ordered_sum``) when ``exact``, else the backend's all-reduce."""

    def __init__(self, exact: bool):
        self.exact = exact
        self.size = dist.get_world_size()

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.contiguous()
        if not self.exact:
            tensor = tensor.clone()
            dist.all_reduce(tensor)
            return tensor
        parts = [torch.empty_like(tensor) for _ in range(self.size)]
        dist.all_gather(parts, tensor)
        return ordered_sum(parts)


class ShardAborted(RuntimeError):
    """Raised in the other shards' threads when one shard failed."""


class TurnShards:
    """``size`` shards in one process, one thread each, running one at a time in shard order.

    A shard runs until it needs a sum over shards, leaves its part and hands over to the next
    shard; the last one takes the ordered sum and hands back to shard 0, and every shard then
    continues with that sum. Each shard draws from its own copy of the CPU random generator
    (all start a step from the same state, as W processes seeded alike), so that a random draw
    of one shard (e.g. mixup's) does not shift another's.
    """

    def __init__(self, size: int):
        self.size = size
        self._local = threading.local()
        self._turn = [threading.Semaphore(0) for _ in range(size)]
        self._parts: list[torch.Tensor | None] = [None] * size
        self._result: torch.Tensor | None = None
        self._rng: list[torch.Tensor] = []
        self._failed = False

    @property
    def index(self) -> int:
        return self._local.index

    def _hand_over(self, i: int, j: int) -> None:
        """Shard ``i`` stops running, shard ``j`` runs next."""
        self._rng[i] = torch.get_rng_state()
        torch.set_rng_state(self._rng[j])
        self._turn[j].release()

    def _wait(self, i: int) -> None:
        self._turn[i].acquire()
        if self._failed:
            raise ShardAborted("another shard failed")

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        i = self.index
        self._parts[i] = tensor
        if i == self.size - 1:
            self._result = ordered_sum(self._parts)
            self._parts = [None] * self.size
        self._hand_over(i, (i + 1) % self.size)
        self._wait(i)
        return self._result

    def run(self, fn: Callable[[int], object]) -> list:
        """``[fn(0), ..., fn(size - 1)]``, each called in its own thread; ``fn`` may call ``sum``."""
        results: list = [None] * self.size
        errors: list[BaseException | None] = [None] * self.size
        self._rng = [torch.get_rng_state()] * self.size
        self._failed = False

        def body(i: int) -> None:
            self._local.index = i
            try:
                self._wait(i)
                results[i] = fn(i)
                if i + 1 < self.size:
                    self._hand_over(i, i + 1)
                else:
                    self._rng[i] = torch.get_rng_state()
            except BaseException as e:  # wake every shard so that all threads end
                errors[i] = e
                self._failed = True
                for turn in self._turn:
                    turn.release()

        threads = [threading.Thread(target=body, args=(i,), name=f"shard-{i}", daemon=True) for i in range(self.size)]
        for t in threads:
            t.start()
        self._turn[0].release()
        for t in threads:
            t.join()
        for turn in self._turn:  # drop the wake-ups a failure left
            while turn.acquire(blocking=False):
                pass
        first = next((e for e in errors if e is not None and not isinstance(e, ShardAborted)), None)
        if first is None:
            first = next((e for e in errors if e is not None), None)
        if first is not None:
            raise first
        torch.set_rng_state(self._rng[0])  # the run continues as shard 0 (every shard drew alike)
        return results


_active: ProcessShards | TurnShards | None = None


def active_shards() -> ProcessShards | TurnShards | None:
    """The shards whose sums ``GlobalBatchNorm`` takes while training (None: one process, one shard)."""
    return _active


def set_active_shards(shards: ProcessShards | TurnShards | None) -> None:
    global _active
    _active = shards


class _ShardSum(torch.autograd.Function):
    """Differentiable sum over shards: the gradient of a sum over shards is summed back."""

    @staticmethod
    def forward(ctx, x, shards):
        ctx.shards = shards
        return shards.sum(x)

    @staticmethod
    def backward(ctx, grad):
        return ctx.shards.sum(grad), None


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm over the global batch of all shards, on CPU or GPU.

    ``torch.nn.SyncBatchNorm`` refuses CPU tensors; this one sums per-channel sums of x and
    x^2 (and the sample count) over the shards and differentiates through the sum.
    Evaluation uses the running statistics, as ``nn.BatchNorm``.
    """

    def _check_input_dim(self, x):
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-D input, got {x.dim()}-D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shards = active_shards()
        if not (self.training and shards is not None):
            return super().forward(x)
        c = x.shape[1]
        dims = [0] + list(range(2, x.dim()))
        dtype = x.dtype
        x = x.float()  # statistics in float32 also under bfloat16 autocast, as nn.BatchNorm computes them
        count = torch.tensor([x.numel() // c], dtype=x.dtype, device=x.device)
        stats = _ShardSum.apply(torch.cat([x.sum(dims), (x * x).sum(dims), count]), shards)
        n = stats[-1]
        mean = stats[:c] / n
        var = stats[c:2 * c] / n - mean * mean
        if self.track_running_stats:
            with torch.no_grad():
                self.running_mean.lerp_(mean, self.momentum)
                self.running_var.lerp_(var * n / (n - 1), self.momentum)
                self.num_batches_tracked += 1
        shape = [1, c] + [1] * (x.dim() - 2)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(dtype)


def convert_global_batchnorm(model: nn.Module) -> nn.Module:
    """Replace every BatchNorm1d/2d of ``model`` (in place) by a ``GlobalBatchNorm`` with the same state and the
    same parameter objects (an optimizer built before the conversion still trains them)."""
    for name, child in model.named_children():
        if isinstance(child, (nn.BatchNorm1d, nn.BatchNorm2d)) and child.momentum is not None:
            new = GlobalBatchNorm(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
            new.load_state_dict(child.state_dict())
            new = new.to(next(child.buffers(), torch.empty(0)).device)
            if child.affine:
                new.weight, new.bias = child.weight, child.bias
            setattr(model, name, new)
        else:
            convert_global_batchnorm(child)
    return model


# ---------------------------------------------------------------------- one training step

ShardLoss = Callable[[nn.Module, torch.Tensor, torch.Tensor], "tuple[torch.Tensor, torch.Tensor]"]


class Parallel:
    """How one global batch's gradient reaches ``.grad`` of the model's parameters.

    * one process, one shard: the model on the whole batch;
    * W processes, plain: DDP (``self.model`` is the DDP wrapper);
    * W processes, exact: the model on this process's shard; gradients summed in shard order;
    * one process, ``shards`` S > 1: the S shards in turns (``TurnShards``), shard i on a replica
      of the model that shares its parameters and keeps buffers of its own (as process i would);
      gradients summed in shard order.

    In the last two, the mean over shards is ``ordered_sum(gradients) / S`` and every shard keeps
    shard 0's buffers between steps (processes: broadcast after each step, so that all evaluate
    with rank 0's; turns: replicas copy them before each step, the model itself evaluates).
    """

    def __init__(self, model: nn.Module, d: Distributed, *, shards: int = 0, exact: bool = True,
                 sync_bn: bool = True, device: torch.device | None = None):
        self.dist = d
        self.net = model
        shards = shards or d.world_size
        if shards < 0:
            raise ValueError(f"--shards must be 0 or positive, got {shards}")
        if d.enabled and shards != d.world_size:
            raise ValueError(f"--shards {shards} with {d.world_size} processes: each process takes one shard "
                             f"(give --shards {d.world_size}, or 0)")
        self.size = shards
        self.turns = TurnShards(shards) if not d.enabled and shards > 1 else None
        if self.turns is not None and device is not None and device.type != "cpu":
            raise ValueError(f"--shards {shards} in one process runs on the CPU only")
        self.exact = self.turns is not None or (d.enabled and exact)
        self.model: nn.Module = model
        self.replicas: list[nn.Module] = [model]
        if self.size > 1 and sync_bn:
            convert_global_batchnorm(model)
        if d.enabled:
            set_active_shards(ProcessShards(exact) if sync_bn else None)
            if exact:
                for tensor in [*model.parameters(), *model.buffers()]:
                    dist.broadcast(tensor.data, src=0)
            else:
                ids = [device.index] if device is not None and device.type == "cuda" else None
                self.model = nn.parallel.DistributedDataParallel(model, device_ids=ids, forward_sync_buffers=True)
        elif self.turns is not None:
            set_active_shards(self.turns if sync_bn else None)
            shared = {id(p): p for p in model.parameters()}
            self.replicas += [copy.deepcopy(model, memo=dict(shared)) for _ in range(shards - 1)]

    def step(self, loss_fn: ShardLoss, batch) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Forward and backward of one global batch; ``batch`` is ``(images, labels)``, or with
        one process and S shards the S shards' ``[(images, labels), ...]``. Returns
        ``(logits, loss, labels)`` of each shard this process ran."""
        if not self.exact:
            images, labels = batch
            logits, loss = loss_fn(self.model, images, labels)
            loss.backward()
            return [(logits, loss, labels)]
        params = [p for p in self.net.parameters() if p.requires_grad]

        def shard(i: int, images: torch.Tensor, labels: torch.Tensor):
            logits, loss = loss_fn(self.replicas[i], images, labels)
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            return logits.detach(), loss.detach(), labels, grads

        if self.turns is None:
            out = [shard(0, *batch)]
            local = [(p, g) for p, g in zip(params, out[0][3]) if g is not None]
            flat = ProcessShards(exact=True).sum(torch.cat([g.reshape(-1) for _, g in local])).div_(self.size)
            summed = {id(p): g.view_as(p) for (p, _), g in zip(local, flat.split([p.numel() for p, _ in local]))}
            mean = [summed.get(id(p)) for p in params]
            self.dist.broadcast_buffers(self.net)  # rank 0's, e.g. batch-norm statistics of its shard
        else:
            if len(batch) != self.size:
                raise ValueError(f"expected the {self.size} shards of a global batch, got {len(batch)}")
            for replica in self.replicas[1:]:  # shard 0's buffers (and mode), as the processes after a step
                replica.train(self.net.training)
                with torch.no_grad():
                    for mine, master in zip(replica.buffers(), self.net.buffers()):
                        mine.copy_(master)
            out = self.turns.run(lambda i: shard(i, *batch[i]))
            mean = [None if gs[0] is None else ordered_sum(gs).div_(self.size) for gs in zip(*(o[3] for o in out))]
        for p, g in zip(params, mean):
            p.grad = g
        return [o[:3] for o in out]

    def close(self) -> None:
        set_active_shards(None)
        self.model = self.net
        self.replicas = [self.net]
