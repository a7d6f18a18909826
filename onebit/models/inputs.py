"""The input of a network built for each known data set: classes, channels and image side.

The one table of these shapes: ``onebit.data`` delivers every set at this size (the folder sets
are resized to it), and ``onebit summary``, ``onebit export`` and ``load_trained_model`` build
networks for a data set with it, without reading the data.
"""
from __future__ import annotations

from onebit.utils import suggest

__all__ = ["DATASET_SHAPES", "DEFAULT_MODELS", "dataset_shape", "model_shape"]

DATASET_SHAPES: dict[str, tuple[int, int, int]] = {
    # name: (classes, channels, image side) of the network's input
    "digits": (10, 1, 8),
    "mnist": (10, 1, 28),
    "fashion-mnist": (10, 1, 28),
    "cifar10": (10, 3, 32),
    "cifar100": (100, 3, 32),
    "tinyimagenet": (200, 3, 224),  # 64x64 files, resized to 224 as RBNN's pipeline does
    "imagenet": (1000, 3, 224),
}


def dataset_shape(name: str) -> tuple[int, int, int]:
    """``(num_classes, in_channels, image_size)`` of the network input for data set ``name``."""
    if name not in DATASET_SHAPES:
        raise ValueError(f"unknown dataset {name!r}{suggest(name, DATASET_SHAPES)}")
    return DATASET_SHAPES[name]


DEFAULT_MODELS: dict[str, str] = {
    # the model ``onebit train --dataset NAME`` trains when none is given: the data set's own
    "digits": "cnn_small_1w1a",
    "mnist": "cnn_small_1w1a",
    "fashion-mnist": "cnn_small_1w1a",
    "cifar10": "resnet20_1w1a",  # the seeds' CIFAR default
    "cifar100": "resnet20_1w1a",
    "tinyimagenet": "resnet18_1w1a",  # RBNN's main.py (its ImageNet form at 224)
    "imagenet": "resnet18_1w1a",  # seed 000
}


def model_shape(name: str, dataset: str | None) -> tuple[int, int, int]:
    """``(num_classes, in_channels, image_size)`` to build registered model ``name`` for ``dataset``
    (without one: the model's own input size, 3 channels, 10 classes)."""
    from onebit.models.registry import get_entry

    return dataset_shape(dataset) if dataset else (10, 3, get_entry(name).input_size)
