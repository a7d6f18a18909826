"""Data sets: ``build_data(name, data_path, ...)`` gives a ``Data(info, train, test)`` of seeded, shardable loaders.

Small sets (digits, mnist, fashion-mnist, cifar10, cifar100) are held in memory and augmented batch-wise on the
device (``memory``); image folders (tinyimagenet, imagenet) are read by torchvision workers (``folder``), or by
NVIDIA DALI for imagenet (``dali``). Order, augmentation and multi-process slicing rules: ``sharding``.
"""
from onebit.data.build import Data, DataInfo, build_data, list_datasets

__all__ = ["Data", "DataInfo", "build_data", "list_datasets"]
