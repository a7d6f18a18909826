"""Image-folder data sets (Tiny-ImageNet, ImageNet): JPEG files decoded and augmented by torchvision transforms in
``DataLoader`` worker processes.

Exact reproducibility as for the in-memory sets (see ``sharding``): the sample order of epoch e is a permutation
drawn from ``(seed, e)`` and sliced per rank, and each training sample is transformed with torch's RNG seeded by
``(seed, e, index)`` — so its augmentation does not depend on the number of workers or processes.
Class indices follow ``ImageFolder``: sorted class-folder names (as RBNN's code), not the order of ``wnids.txt``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms
from torchvision.datasets.folder import IMG_EXTENSIONS, default_loader, find_classes, make_dataset

from onebit.data.sharding import (
    epoch_generator,
    mix_seed,
    rank_slice,
    test_batch_size,
    test_shard,
    train_batch_bounds,
)

Samples = list[tuple[str, int]]

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
TINYIMAGENET_MEAN, TINYIMAGENET_STD = (0.4802, 0.4481, 0.3975), (0.2302, 0.2265, 0.2262)


# ---------------------------------------------------------------- transforms (RBNN's)


def tinyimagenet_transforms(mean, std, size: int) -> tuple[transforms.Compose, transforms.Compose]:
    """RBNN: train Resize(224) -> RandomRotation(20) -> flip; val Resize(224). The 64x64 images become 224x224."""
    finish = [transforms.ToTensor(), transforms.Normalize(mean, std)]
    train = [transforms.Resize(size), transforms.RandomRotation(20), transforms.RandomHorizontalFlip()]
    return transforms.Compose(train + finish), transforms.Compose([transforms.Resize(size)] + finish)


def imagenet_transforms(mean, std, size: int) -> tuple[transforms.Compose, transforms.Compose]:
    """RBNN: train RandomResizedCrop(224, scale=(0.08, 1.25)) (sic, upper bound > 1) -> flip; val Resize(256) ->
    CenterCrop(224)."""
    finish = [transforms.ToTensor(), transforms.Normalize(mean, std)]
    train = [transforms.RandomResizedCrop(size, scale=(0.08, 1.25)), transforms.RandomHorizontalFlip()]
    test = [transforms.Resize(size * 256 // 224), transforms.CenterCrop(size)]
    return transforms.Compose(train + finish), transforms.Compose(test + finish)


# ---------------------------------------------------------------- finding the files


def _class_folder_samples(folder: Path, what: str) -> tuple[Samples, dict[str, int]]:
    """``(path, class index)`` of every image under ``folder/<class>/`` (any depth), ImageFolder-style."""
    if not folder.is_dir():
        raise FileNotFoundError(f"missing folder {folder} ({what})")
    try:
        classes, class_to_idx = find_classes(str(folder))
        return make_dataset(str(folder), class_to_idx, extensions=IMG_EXTENSIONS), class_to_idx
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{folder}: {e} (expected {what})") from e


def _check_same_classes(train: dict[str, int], val: dict[str, int], val_folder: Path) -> None:
    if val != train:
        unknown = sorted(set(val) - set(train))[:5]
        raise ValueError(
            f"{val_folder}: its class folders differ from the training folders' "
            f"({len(val)} vs {len(train)} classes; not in train: {unknown})"
        )


def tinyimagenet_samples(data_path: str | Path) -> tuple[Samples, Samples, int]:
    """``tiny-imagenet-200/train/<wnid>/images/*.JPEG`` and either the original
    ``val/images/*.JPEG`` + ``val/val_annotations.txt`` or val images sorted into ``val/<wnid>/`` folders."""
    root = Path(data_path).expanduser()
    if not (root / "train").is_dir() and (root / "tiny-imagenet-200").is_dir():
        root = root / "tiny-imagenet-200"
    train, class_to_idx = _class_folder_samples(root / "train", "tiny-imagenet-200/train/<wnid>/images/*.JPEG")
    annotations = root / "val" / "val_annotations.txt"
    if not annotations.is_file():
        val, val_classes = _class_folder_samples(
            root / "val", "val/images/*.JPEG with val/val_annotations.txt, or val/<wnid>/*.JPEG"
        )
        _check_same_classes(class_to_idx, val_classes, root / "val")
        return train, val, len(class_to_idx)
    val = []
    for line_number, line in enumerate(annotations.read_text().splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in class_to_idx:
            raise ValueError(
                f"{annotations}:{line_number}: expected '<file>\\t<wnid of a train folder>\\t...', got {line!r}"
            )
        path = root / "val" / "images" / fields[0]
        if not path.is_file():
            raise FileNotFoundError(f"{annotations}:{line_number}: image {path} is missing")
        val.append((str(path), class_to_idx[fields[1]]))
    return train, val, len(class_to_idx)


def imagenet_folders(data_path: str | Path) -> tuple[Path, Path]:
    """``<data_path>/train/<class>/*.JPEG`` (RBNN's DALI path names it ``ILSVRC2012_img_train``; both accepted)
    and ``<data_path>/val/<class>/*.JPEG``."""
    root = Path(data_path).expanduser()
    train = next((root / n for n in ("train", "ILSVRC2012_img_train") if (root / n).is_dir()), root / "train")
    return train, root / "val"


def imagenet_samples(data_path: str | Path) -> tuple[Samples, Samples, int]:
    train_folder, val_folder = imagenet_folders(data_path)
    train, class_to_idx = _class_folder_samples(train_folder, "imagenet: <data_path>/train/<class>/*.JPEG")
    val, val_classes = _class_folder_samples(val_folder, "imagenet: <data_path>/val/<class>/*.JPEG")
    _check_same_classes(class_to_idx, val_classes, val_folder)
    return train, val, len(class_to_idx)


# ---------------------------------------------------------------- data sets and loader


class ImageList(Dataset):
    """Images given as ``(path, label)`` pairs, decoded to RGB by PIL and transformed."""

    def __init__(self, samples: Samples, transform):
        self.samples, self.transform = samples, transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        return self.transform(default_loader(path)), label


class SeededItems(Dataset):
    """Item ``(epoch, index)`` of ``dataset``, transformed with torch's RNG seeded by ``(seed, epoch, index)``."""

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset, self.seed = dataset, seed

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(mix_seed(self.seed, epoch, index))
            return self.dataset[index]


class SeededBatches:
    """Batch sampler: this rank's share of each global batch of the ``(seed, epoch)`` permutation."""

    def __init__(self, num_samples: int, batch_size: int, seed: int, rank: int, world_size: int, drop_last: bool):
        self.num_samples, self.seed, self.rank, self.world_size = num_samples, seed, rank, world_size
        self.bounds = train_batch_bounds(num_samples, batch_size, world_size, drop_last)
        self.epoch, self.start = 0, 0

    def __len__(self) -> int:
        return len(self.bounds)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        order = torch.randperm(self.num_samples, generator=epoch_generator(self.seed, self.epoch)).tolist()
        for start, stop in self.bounds[self.start :]:  # items are seeded by (seed, epoch, index): skipping is exact
            yield [(self.epoch, i) for i in order[rank_slice(start, stop, self.rank, self.world_size)]]


class FolderLoader:
    """Yields ``(images float32 normalised, labels int64)`` on ``device``; ``len()`` = batches of this rank."""

    def __init__(
        self,
        dataset: ImageList,
        *,
        batch_size: int,
        device: torch.device | str = "cpu",
        train: bool,
        workers: int = 8,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
    ):
        self.device = torch.device(device)
        if train:
            self.batches = SeededBatches(len(dataset), batch_size, seed, rank, world_size, drop_last)
            dataset = SeededItems(dataset, seed)
        else:
            shard, step = test_shard(len(dataset), rank, world_size), test_batch_size(batch_size, world_size)
            self.batches = [list(shard[i : i + step]) for i in range(0, len(shard), step)]
        self.loader = DataLoader(
            dataset,
            batch_sampler=self.batches,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=workers > 0,
        )

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Yield epoch ``epoch``'s training batches from batch ``start`` on (a mid-epoch resume): the
        skipped batches are neither read nor decoded."""
        if isinstance(self.batches, SeededBatches):
            self.batches.epoch, self.batches.start = epoch, start

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for images, labels in self.loader:
            yield images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)
