"""CIFAR-10 top-1 before and after Bi-Real's BatchNorm re-training (``onebit train --bn_retrain``).

Trains a binary network for a few epochs on a subset of CIFAR-10 (seed 000's Bi-Real SGD settings:
momentum 0.9, weight decay 0), then fixes its weights to their binarized values and trains only the
BatchNorm layers for ``--bn_epochs`` (default 1) on the same images; prints both test top-1 values
(full 10,000-image test set unless ``--test_size``).

    python benchmarks/bn_retrain_cifar10.py                                   # 5000 images, 4 + 1 epochs
    python benchmarks/bn_retrain_cifar10.py --train_size 10000 --epochs 8 --seeds 1 2
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


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="resnet20_1w1a")
    p.add_argument("--method", default="bireal")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--bn_epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--bn_lr", type=float, default=0.01)
    p.add_argument("--train_size", type=int, default=5000)
    p.add_argument("--test_size", type=int, default=10000)
    p.add_argument("--seeds", type=int, nargs="+", default=[1])
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = write_subset(Path(tmp) / "data", args.train_size, args.test_size)
        for seed in args.seeds:
            common = ["--dataset", "cifar10", "--data_path", str(data), "--print_freq", "0", "--time_estimate", "0",
                      "--results_dir", tmp, "-b", "128", "--weight_decay", "0", "--seed", str(seed)]
            base = run([*common, "--model", args.model, "--method", args.method, "--epochs", str(args.epochs),
                        "--lr", str(args.lr), "--save", f"base{seed}"])
            bn = run([*common, "--bn_retrain", f"{tmp}/base{seed}/checkpoint.pth", "--epochs", str(args.bn_epochs),
                      "--lr", str(args.bn_lr), "--save", f"bn{seed}"])
            rows.append((seed, base["final_top1"], bn["top1_before"], bn["final_top1"]))
    print(f"\n{args.model} ({args.method}), CIFAR-10 {args.train_size} train images, {args.epochs} epochs, "
          f"then {args.bn_epochs} BN-only epoch(s) at lr {args.bn_lr}; test on {args.test_size} images")
    print("seed  trained top-1  frozen (before)  after BN retraining")
    for seed, trained, before, after in rows:
        print(f"{seed:>4}  {trained:>13.2f}  {before:>15.2f}  {after:>19.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
