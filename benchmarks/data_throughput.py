"""Data pipeline throughput on the real CIFAR-10 / Fashion-MNIST copies (CPU, no model).

Measures, side by side in one run:
  1. loading the whole training split into memory (``build_data``);
  2. one training epoch of batches (shuffle + random crop + flip + normalise) with ``onebit.data``'s batched,
     in-memory loader;
  3. the same augmentation done the seeds' way (torchvision PIL transforms image by image in a ``DataLoader``,
     workers=0), on a subset, extrapolated to a full epoch.

Usage:  python benchmarks/data_throughput.py [--data_path /work/shared/data] [--threads 1] [--baseline_images 5000]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from onebit.data import build_data


class PilImages(Dataset):
    """uint8 NCHW images served as PIL images, for torchvision's per-image transforms."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        images = images.transpose(0, 2, 3, 1)  # HWC, as PIL wants; grey images as H x W
        self.images = images[..., 0] if images.shape[-1] == 1 else images
        self.labels, self.transform = labels, transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def time_epoch(loader) -> tuple[float, int]:
    start, seen = time.perf_counter(), 0
    for images, labels in loader:
        seen += len(labels)
    return time.perf_counter() - start, seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_path", default="/work/shared/data")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--baseline_images", type=int, default=5000)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), batch {args.batch_size}")

    for name in ("cifar10", "fashion-mnist"):
        start = time.perf_counter()
        data = build_data(name, args.data_path, batch_size=args.batch_size)
        load = time.perf_counter() - start
        time_epoch(data.train)  # warm-up (first-call dispatch costs)
        data.train.set_epoch(1)
        epoch, seen = time_epoch(data.train)
        test, _ = time_epoch(data.test)
        print(f"{name:14s} load {load:5.2f} s | train epoch ({seen} images, crop+flip+normalise) {epoch:5.2f} s "
              f"= {seen / epoch:8.0f} img/s | test epoch {test:5.2f} s")

        info, images, labels = data.info, data.train.images.numpy(), data.train.labels.numpy()
        pad = {"cifar10": 4, "fashion-mnist": 2}[name]
        per_image = transforms.Compose([
            transforms.RandomCrop(info.image_size, padding=pad), transforms.RandomHorizontalFlip(),
            transforms.ToTensor(), transforms.Normalize(info.mean, info.std),
        ])
        subset = slice(0, args.baseline_images)
        baseline = DataLoader(PilImages(images[subset], labels[subset], per_image), batch_size=args.batch_size,
                              shuffle=True, num_workers=0)
        part, seen_part = time_epoch(baseline)
        full = part * info.train_size / seen_part
        print(f"{'':14s} torchvision per-image transforms, workers=0: {seen_part / part:8.0f} img/s "
              f"-> {full:5.2f} s per epoch ({full / epoch:.0f}x slower)")


if __name__ == "__main__":
    main()
