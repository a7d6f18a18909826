"""Which samples each process sees, in which order: seeded epochs and rank slices of global batches.

Every loader of the package follows the same rules, so that a run is exactly reproducible:

* the order (and the augmentation draws) of epoch ``e`` depend only on ``(seed, e)``: a run resumed at epoch k sees
  the same batches as the uninterrupted run;
* ``batch_size`` is the GLOBAL batch. Rank ``r`` of ``W`` processes receives the contiguous slice
  ``[r*B/W, (r+1)*B/W)`` of each global batch a 1-process run would see, so W processes together see exactly the
  1-process batches. With ``drop_last=False`` the final, shorter batch is cut to a multiple of W (at most W-1
  samples per epoch are skipped, and only when W > 1) so that every rank gets the same number of equal batches;
* the test split is cut into W contiguous shards (sizes differ by at most one), each rank evaluating its own shard
  in batches of ``ceil(batch_size_test / W)``: every test sample is evaluated exactly once over all ranks (sum the
  counts with all_reduce). Ranks may then have a different ``len()`` (by at most one batch).
"""
from __future__ import annotations

import math

import numpy as np
import torch


def mix_seed(*values: int) -> int:
    """A well-mixed 63-bit seed from integers (e.g. ``(seed, epoch)``), stable across runs and platforms."""
    state = np.random.SeedSequence([int(v) & 0xFFFFFFFFFFFFFFFF for v in values]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The CPU generator holding all randomness of one epoch (shuffle, then augmentation draws)."""
    return torch.Generator().manual_seed(mix_seed(seed, epoch))


def check_distributed(batch_size: int, rank: int, world_size: int) -> None:
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    if batch_size < 1:
        raise ValueError(f"batch size must be positive, got {batch_size}")
    if batch_size % world_size:
        raise ValueError(
            f"the global batch size {batch_size} must be divisible by the number of processes {world_size} "
            f"(each process takes batch_size / world_size samples of every batch)"
        )


def train_batch_bounds(num_samples: int, batch_size: int, world_size: int, drop_last: bool) -> list[tuple[int, int]]:
    """``(start, stop)`` positions in the epoch order of each global training batch (see module docstring)."""
    bounds = []
    for start in range(0, num_samples, batch_size):
        stop = min(start + batch_size, num_samples)
        if stop - start < batch_size:
            if drop_last:
                break
            stop -= (stop - start) % world_size
            if stop == start:
                break
        bounds.append((start, stop))
    return bounds


def rank_slice(start: int, stop: int, rank: int, world_size: int) -> slice:
    """This rank's contiguous part of the global batch ``[start, stop)`` (whose size is a multiple of W)."""
    share = (stop - start) // world_size
    return slice(start + rank * share, start + (rank + 1) * share)


def test_shard(num_samples: int, rank: int, world_size: int) -> range:
    """This rank's contiguous shard of the test split (sizes differ by at most one)."""
    base, extra = divmod(num_samples, world_size)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (rank < extra))


def test_batch_size(batch_size_test: int, world_size: int) -> int:
    return max(1, math.ceil(batch_size_test / world_size))


class ShardBatches:
    """The train loaders of ranks ``0..S-1`` of S taken together, for one process that computes what S do: per
    global batch, the S rank batches ``[(images, labels), ...]`` in rank order."""

    def __init__(self, loaders: list):
        self.loaders = loaders

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        for loader in self.loaders:
            loader.set_epoch(epoch, start)

    def __len__(self) -> int:
        return len(self.loaders[0])

    def __iter__(self):
        return (list(batches) for batches in zip(*self.loaders, strict=True))
