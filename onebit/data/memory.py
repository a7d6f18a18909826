"""Loader of a small data set held whole in memory (airbench-style).

The split lives on the training device as one uint8 tensor ``(N, C, H, W)``; each batch is gathered, augmented and
normalised there as a whole (no per-image Python work, no worker processes). All random draws of an epoch (the
shuffle, then every sample's crop offsets and flip) come from one generator seeded with ``(seed, epoch)`` and are
indexed by the sample's position in the epoch, so a rank's slice of a global batch carries exactly the draws of the
1-process batch (see ``sharding``).
"""
from __future__ import annotations

from typing import Iterator, Sequence

import torch
import torch.nn.functional as F

from onebit.data.formats import Split
from onebit.data.sharding import (
    epoch_generator,
    rank_slice,
    test_batch_size,
    test_shard,
    train_batch_bounds,
)


def crop_and_flip(
    images: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor | None, padding: int
) -> torch.Tensor:
    """torchvision's RandomCrop(size, padding, fill 0) then RandomHorizontalFlip, for a whole batch at once.

    ``offsets[n] = (top, left)`` of the crop in the zero-padded image, in ``[0, 2*padding]``; ``flips[n]`` a bool
    (``flips=None``: no flip). Flipping first is the same: flip(crop(pad(x), top, left)) =
    crop(pad(flip(x)), top, 2*padding - left).
    """
    n, c, h, w = images.shape
    samples = torch.arange(n, device=images.device)
    left = offsets[:, 1]
    if flips is not None:
        images = torch.cat([images, images.flip(3)]).index_select(0, samples + n * flips)
        left = torch.where(flips, 2 * padding - left, left)
    padded = F.pad(images, (padding,) * 4)
    height, width = padded.shape[2:]
    # Every crop window of every image as a strided view (no copy): windows[n, top, left] is the (c, h, w) crop.
    windows = padded.as_strided(
        (n, 2 * padding + 1, 2 * padding + 1, c, h, w), (c * height * width, width, 1, height * width, width, 1)
    )
    return windows[samples, offsets[:, 0], left]


class InMemoryLoader:
    """Yields ``(images float32 normalised, labels int64)`` on ``device``; ``len()`` = batches of this rank."""

    def __init__(
        self,
        split: Split,
        *,
        batch_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        device: torch.device | str = "cpu",
        train: bool,
        crop_padding: int = 0,
        flip: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
    ):
        self.images = torch.from_numpy(split.images).to(device)
        self.labels = torch.from_numpy(split.labels).to(device)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.train, self.crop_padding, self.flip = train, crop_padding, flip
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch, self.start = 0, 0
        n = len(self.labels)
        if train:
            self.batches = [
                rank_slice(start, stop, rank, world_size)
                for start, stop in train_batch_bounds(n, batch_size, world_size, drop_last)
            ]
        else:
            shard, step = test_shard(n, rank, world_size), test_batch_size(batch_size, world_size)
            self.batches = [slice(i, min(i + step, shard.stop)) for i in range(shard.start, shard.stop, step)]

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Yield epoch ``epoch``'s training batches from batch ``start`` on (a mid-epoch resume)."""
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return len(self.batches)

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """Same arithmetic as ToTensor + Normalize: (x / 255 - mean) / std, in float32."""
        return images.float().div_(255).sub_(self.mean).div_(self.std)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if not self.train:
            for part in self.batches:
                yield self.normalise(self.images[part]), self.labels[part]  # contiguous slices: no copy
            return
        n, device = len(self.labels), self.labels.device
        generator = epoch_generator(self.seed, self.epoch)
        order = torch.randperm(n, generator=generator).to(device)
        offsets = torch.randint(0, 2 * self.crop_padding + 1, (n, 2), generator=generator).to(device)
        flips = (torch.rand(n, generator=generator) < 0.5).to(device) if self.flip else None
        for part in self.batches[self.start :]:  # the epoch's randomness is drawn above, whole
            index = order[part]
            images = self.images.index_select(0, index)  # much faster than images[index] on CPU
            if self.crop_padding or self.flip:
                images = crop_and_flip(images, offsets[part], None if flips is None else flips[part], self.crop_padding)
            yield self.normalise(images), self.labels.index_select(0, index)
