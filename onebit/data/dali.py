"""ImageNet loaders on NVIDIA DALI (``use_dali=True``), RBNN's ``dataset/imagenet.py`` pipelines.

UNTESTED: DALI cannot be installed on the machines this package is developed on (no GPU); this module is written
against the documented DALI >= 1.0 ``fn`` API (RBNN used the pre-1.0 ``ops`` API) and only its import check is
exercised by the tests. DALI is not a dependency of the package.

Deviations from the torchvision loaders of this package: DALI shuffles with its own generator (pipeline seed
12 + device id, as RBNN), so batches are NOT a function of ``(seed, epoch)`` (no exact resume, no equality between a
W-process and a 1-process run); each rank reads its own shard of the files.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Iterator

import torch

from onebit.data.sharding import test_batch_size

INSTALL_HINT = (
    "use_dali=True needs NVIDIA DALI and a CUDA GPU. Install the wheel matching your CUDA version, e.g. "
    "`pip install --extra-index-url https://pypi.nvidia.com nvidia-dali-cuda120` "
    "(see https://docs.nvidia.com/deeplearning/dali/user-guide/docs/installation.html), "
    "or run without --use_dali to use the torchvision loaders"
)


def import_dali():
    """The DALI modules used here, or an ImportError saying how to install DALI."""
    try:
        from nvidia.dali import fn, pipeline_def, types
        from nvidia.dali.plugin.pytorch import DALIClassificationIterator, LastBatchPolicy
    except ImportError as e:
        raise ImportError(f"{INSTALL_HINT} ({e})") from e
    return fn, pipeline_def, types, DALIClassificationIterator, LastBatchPolicy


class DaliLoader:
    """Yields ``(images float32 normalised NCHW, labels int64)`` on the pipeline's GPU."""

    def __init__(self, iterator, num_batches: int):
        self.iterator, self.num_batches = iterator, num_batches
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """DALI reshuffles on its own every epoch (the epoch number is not used), so a mid-epoch
        resume only skips ``start`` batches of a new order."""
        self.start = start

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for step, batch in enumerate(self.iterator):
            if step >= self.start:
                yield batch[0]["data"], batch[0]["label"].squeeze(-1).long()


def dali_imagenet_loader(
    folder: Path, *, train: bool, batch_size: int, workers: int, device: torch.device | str,
    rank: int, world_size: int, mean, std, drop_last: bool = False,
) -> DaliLoader:
    """Train: decode -> RandomResizedCrop(224, area [0.08, 1.25]) -> coin-flip mirror -> normalise;
    val: resize shorter side to 256 (triangular) -> centre crop 224 -> normalise. ``batch_size`` is global
    (split as in ``sharding``)."""
    fn, pipeline_def, types, DALIClassificationIterator, LastBatchPolicy = import_dali()
    device = torch.device(device)
    if device.type != "cuda":
        raise ValueError(f"use_dali=True decodes on the GPU; got device={device} (use a CUDA device or drop use_dali)")
    device_id = device.index if device.index is not None else torch.cuda.current_device()

    @pipeline_def
    def pipeline():
        jpegs, labels = fn.readers.file(
            file_root=str(folder), shard_id=rank, num_shards=world_size, random_shuffle=train, name="Reader"
        )
        images = fn.decoders.image(jpegs, device="mixed", output_type=types.RGB)
        if train:
            images = fn.random_resized_crop(images, size=224, random_area=[0.08, 1.25])
            mirror = fn.random.coin_flip(probability=0.5)
        else:
            images = fn.resize(images, resize_shorter=256, interp_type=types.INTERP_TRIANGULAR)
            mirror = 0
        images = fn.crop_mirror_normalize(
            images, crop=(224, 224), mirror=mirror, dtype=types.FLOAT, output_layout="CHW",
            mean=[255 * m for m in mean], std=[255 * s for s in std],
        )
        return images, labels.gpu()

    local_batch = batch_size // world_size if train else test_batch_size(batch_size, world_size)
    pipe = pipeline(batch_size=local_batch, num_threads=max(1, workers), device_id=device_id, seed=12 + device_id)
    pipe.build()
    policy = LastBatchPolicy.DROP if train and drop_last else LastBatchPolicy.PARTIAL
    iterator = DALIClassificationIterator(pipe, reader_name="Reader", last_batch_policy=policy, auto_reset=True)
    shard_size = pipe.epoch_size("Reader") / world_size
    drop = policy == LastBatchPolicy.DROP
    num_batches = int(shard_size // local_batch) if drop else math.ceil(shard_size / local_batch)
    return DaliLoader(iterator, num_batches)
