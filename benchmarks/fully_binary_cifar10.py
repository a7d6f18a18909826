"""A short CIFAR-10 run of a fully binary recipe (seed 003: first layer binary, BN => offset,
binary classifier), on a subset of the training images, next to its reported full-schedule target.

    python benchmarks/fully_binary_cifar10.py                                      # resnet20_fb, 5000 images, 4 epochs
    python benchmarks/fully_binary_cifar10.py --recipe configs/irnet_community/cifar10_vgg_small_fb_1w1a.yaml
    python benchmarks/fully_binary_cifar10.py --epochs 3 --method bireal --optimizer adam --lr 0.005   # + flags
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from methods_cifar10 import write_subset  # noqa: E402

from onebit.train import run  # noqa: E402
from onebit.train.config import load_recipe  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--recipe", default=str(ROOT / "configs/irnet_community/cifar10_resnet20_fb_1w1a.yaml"))
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--train_size", type=int, default=5000)
    p.add_argument("--test_size", type=int, default=10000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    args, flags = p.parse_known_args()  # the rest: onebit train flags, e.g. --optimizer adam --lr 0.005
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        data = write_subset(Path(tmp) / "data", args.train_size, args.test_size)
        result = run(["--config", args.recipe, "--data_path", str(data), "--epochs", str(args.epochs),
                      "--seed", str(args.seed), "--print_freq", "0", "--time_estimate", "0", "--results_dir", tmp,
                      "--save", "fb", *flags])
    target = load_recipe(args.recipe).get("target_top1")
    print(f"\n{Path(args.recipe).name}: {args.epochs} epochs on {args.train_size} images, test on {args.test_size}: "
          f"best top-1 {result['best_top1']:.2f}% (the seed's full schedule: {target})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
