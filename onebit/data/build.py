"""The catalogue of data sets and ``build_data``, the one entry point of the training engine.

Normalisation and training augmentation (RBNN's for CIFAR, Tiny-ImageNet and ImageNet; our choices, marked, for
the others). Test splits are never augmented or shuffled.

| name          | held   | train augmentation                      | mean / std                                      |
|---------------|--------|-----------------------------------------|-------------------------------------------------|
| digits        | memory | random 1-pixel shift (crop 8, pad 1)*   | train-split stats (0.3054 / 0.3760)*            |
| mnist         | memory | random crop 28 pad 2*                   | (0.1307 / 0.3081) usual MNIST stats*            |
| fashion-mnist | memory | random crop 28 pad 2 + h-flip*          | (0.2860 / 0.3530) train stats*                  |
| cifar10       | memory | random crop 32 pad 4 + h-flip           | ImageNet stats (sic, RBNN)                      |
| cifar100      | memory | random crop 32 pad 4 + h-flip           | (0.507,0.487,0.441) / (0.267,0.256,0.276)       |
| tinyimagenet  | folder | Resize 224, RandomRotation 20, h-flip   | (0.4802,0.4481,0.3975) / (0.2302,0.2265,0.2262) |
| imagenet      | folder | RandomResizedCrop 224 (0.08-1.25), flip | ImageNet stats                                  |

(*) our choice: RBNN's MNIST entry (Resize 96, 3-channel stats on 1-channel images) does not run.
Deviation: RBNN evaluates Tiny-ImageNet with the training batch size ``-b``; here every test split uses
``batch_size_test`` (same results in eval mode).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Union

import torch

from onebit.data import formats
from onebit.data.memory import InMemoryLoader
from onebit.data.sharding import check_distributed
from onebit.models.inputs import DATASET_SHAPES, dataset_shape
from onebit.utils import suggest


@dataclass(frozen=True)
class DataInfo:
    name: str
    num_classes: int
    in_channels: int
    image_size: int
    """Side of the (square) images the model receives."""
    train_size: int
    """Samples in the whole training split (all ranks together)."""
    test_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(num_classes, in_channels, image_size)``: what a model is built for (``build_model(config, *shape)``)."""
        return self.num_classes, self.in_channels, self.image_size


@dataclass
class Data:
    info: DataInfo
    train: object
    """Loader: ``set_epoch(e)`` (or ``set_epoch(e, start)`` to begin at batch ``start``) then iterate
    ``(images, labels)``; ``len()`` = batches per epoch of this rank."""
    test: object


@dataclass(frozen=True)
class MemoryRecipe:
    read: Callable[[Union[str, Path, None], str], formats.Split]
    """``read(data_path, split)`` with split "train" or "test"."""
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_padding: int
    flip: bool
    num_classes: int = 10


@dataclass(frozen=True)
class FolderRecipe:
    samples: Callable
    """``samples(data_path) -> (train [(path, label)], test [(path, label)], num_classes)``."""
    transforms: Callable
    """``transforms(mean, std, image_size) -> (train transform, test transform)``."""
    mean: tuple[float, ...]
    std: tuple[float, ...]


def _read_idx_dataset(folder_names: list[str], name: str, data_path, split: str) -> formats.Split:
    expected = ", ".join(f"{stem}.gz" for stem in (*formats.MNIST_FILES["train"], *formats.MNIST_FILES["test"]))
    folder = formats.find_folder(data_path, folder_names, formats.MNIST_FILES["train"][0], name, expected)
    return formats.read_mnist(folder, split)


def _read_cifar(num_classes: int, data_path, split: str) -> formats.Split:
    if num_classes == 10:
        folder = formats.find_folder(data_path, ["cifar-10-batches-py"], "data_batch_1", "cifar10",
                                     "cifar-10-batches-py/{data_batch_1..5, test_batch}")
    else:
        folder = formats.find_folder(data_path, ["cifar-100-python"], "train", "cifar100",
                                     "cifar-100-python/{train, test}")
    return formats.read_cifar(folder, split, num_classes)


def _folder_recipes() -> dict[str, FolderRecipe]:
    from onebit.data import folder  # imports torchvision: only when a folder data set is used

    return {
        "tinyimagenet": FolderRecipe(folder.tinyimagenet_samples, folder.tinyimagenet_transforms,
                                     folder.TINYIMAGENET_MEAN, folder.TINYIMAGENET_STD),
        "imagenet": FolderRecipe(folder.imagenet_samples, folder.imagenet_transforms,
                                 folder.IMAGENET_MEAN, folder.IMAGENET_STD),
    }


MEMORY_DATASETS: dict[str, MemoryRecipe] = {
    "digits": MemoryRecipe(lambda data_path, split: formats.read_digits(split), (0.3054,), (0.3760,), 1, False),
    "mnist": MemoryRecipe(partial(_read_idx_dataset, ["mnist", "MNIST/raw"], "mnist"), (0.1307,), (0.3081,), 2, False),
    "fashion-mnist": MemoryRecipe(partial(_read_idx_dataset, ["fashion-mnist", "FashionMNIST/raw"], "fashion-mnist"),
                                  (0.2860,), (0.3530,), 2, True),
    "cifar10": MemoryRecipe(partial(_read_cifar, 10), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 4, True),
    "cifar100": MemoryRecipe(partial(_read_cifar, 100), (0.507, 0.487, 0.441), (0.267, 0.256, 0.276), 4, True, 100),
}
FOLDER_DATASET_NAMES = ("tinyimagenet", "imagenet")


def list_datasets() -> list[str]:
    return sorted(DATASET_SHAPES)


def build_data(
    name: str,
    data_path: str | Path | None = None,
    *,
    batch_size: int = 256,
    batch_size_test: int = 128,
    workers: int = 8,
    device: torch.device | str = "cpu",
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    use_dali: bool = False,
    drop_last: bool = False,
) -> Data:
    """Train and test loaders of data set ``name`` found under ``data_path`` (see the module docstring).

    ``batch_size`` and ``batch_size_test`` are global (over the ``world_size`` processes); ``rank`` gets its slice of
    every global batch and its shard of the test split (``onebit.data.sharding``).
    """
    if name not in list_datasets():
        raise ValueError(f"unknown dataset {name!r}{suggest(name, list_datasets())}")
    check_distributed(batch_size, rank, world_size)
    if batch_size_test < 1:
        raise ValueError(f"test batch size must be positive, got {batch_size_test}")
    if use_dali:
        if name != "imagenet":
            raise ValueError(f"use_dali=True is only available for imagenet, not {name!r}")
        from onebit.data.dali import import_dali

        import_dali()  # fail before scanning a million files
    if data_path is None and name != "digits":
        raise ValueError(f"dataset {name!r} needs data_path (the folder that holds it)")
    common = dict(device=device, seed=seed, rank=rank, world_size=world_size)

    if name in MEMORY_DATASETS:
        recipe = MEMORY_DATASETS[name]
        train, test = recipe.read(data_path, "train"), recipe.read(data_path, "test")
        num_classes, channels, _ = dataset_shape(name)
        c, h = train.images.shape[1:3]  # the side may differ from the table's (e.g. a benchmark's pooled subset)
        if c != channels or test.images.shape[1:] != train.images.shape[1:]:
            raise ValueError(f"{name}: train images {train.images.shape[1:]} and test images {test.images.shape[1:]} "
                             f"in {data_path}, expected {channels} channels in both and the same size")
        info = DataInfo(name, num_classes, c, h, len(train.labels), len(test.labels), recipe.mean, recipe.std)
        normalise = dict(mean=recipe.mean, std=recipe.std, **common)
        return Data(
            info,
            InMemoryLoader(train, batch_size=batch_size, train=True, crop_padding=recipe.crop_padding,
                           flip=recipe.flip, drop_last=drop_last, **normalise),
            InMemoryLoader(test, batch_size=batch_size_test, train=False, **normalise),
        )

    recipe = _folder_recipes()[name]
    train_samples, test_samples, num_classes = recipe.samples(data_path)
    side = dataset_shape(name)[2]
    info = DataInfo(name, num_classes, 3, side, len(train_samples), len(test_samples), recipe.mean, recipe.std)
    if use_dali:
        from onebit.data.dali import dali_imagenet_loader
        from onebit.data.folder import imagenet_folders

        train_folder, val_folder = imagenet_folders(data_path)
        dali = dict(workers=workers, device=device, rank=rank, world_size=world_size, mean=recipe.mean, std=recipe.std)
        return Data(
            info,
            dali_imagenet_loader(train_folder, train=True, batch_size=batch_size, drop_last=drop_last, **dali),
            dali_imagenet_loader(val_folder, train=False, batch_size=batch_size_test, **dali),
        )

    from onebit.data.folder import FolderLoader, ImageList

    train_transform, test_transform = recipe.transforms(recipe.mean, recipe.std, side)
    return Data(
        info,
        FolderLoader(ImageList(train_samples, train_transform), batch_size=batch_size, train=True, workers=workers,
                     drop_last=drop_last, **common),
        FolderLoader(ImageList(test_samples, test_transform), batch_size=batch_size_test, train=False,
                     workers=workers, **common),
    )
