"""Every binarization method trains resnet20_1w1a on real Fashion-MNIST for a short fixed budget.

A smoke test of the methods at the scale of a real data set: each one must clear a floor
that a broken implementation (no gradient reaching the binary layers, a wrong sign of the
surrogate, a lost scale) would not reach. The subset (first N train / test images of the
real files, written as idx files to a temporary folder) goes through the training engine
exactly as ``onebit train --dataset fashion-mnist`` would.

    python benchmarks/methods_fmnist.py                      # all methods, defaults below
    python benchmarks/methods_fmnist.py --methods rbnn irnet --train_size 10000 --epochs 2

Prints a table (method, epochs, top-1, seconds) and exits 1 if a method misses the floor.
"""
from __future__ import annotations

import argparse
import gzip
import shlex
import struct
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from onebit.train import run

DATA = Path("/work/shared/data/fashion-mnist")
ALL_METHODS = ["rbnn", "irnet", "bireal", "reactnet", "xnor", "xnorpp", "bnn", "dorefa", "recu", "fda", "ienet"]


def read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(header + np.ascontiguousarray(array, np.uint8).tobytes())


def write_subset(root: Path, train_size: int, test_size: int, pool: int) -> None:
    """The first images of the real files (Fashion-MNIST's order is already shuffled),
    average-pooled ``pool x pool`` (1: the original 28 x 28)."""
    out = root / "fashion-mnist"
    out.mkdir(parents=True)
    for split, size in (("train", train_size), ("t10k", test_size)):
        images = read_idx(DATA / f"{split}-images-idx3-ubyte.gz")[:size].astype(np.float32)
        n, h, w = images.shape
        images = images.reshape(n, h // pool, pool, w // pool, pool).mean((2, 4))
        write_idx(out / f"{split}-images-idx3-ubyte.gz", np.rint(images))
        write_idx(out / f"{split}-labels-idx1-ubyte.gz", read_idx(DATA / f"{split}-labels-idx1-ubyte.gz")[:size])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--methods", nargs="+", default=ALL_METHODS)
    p.add_argument("--train_size", type=int, default=10000)
    p.add_argument("--test_size", type=int, default=2000)
    p.add_argument("--pool", type=int, default=2, help="average-pool the images (2: 14 x 14, 4x cheaper; 1: 28 x 28)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--floor", type=float, default=70.0, help="minimum top-1 (%%) of every method")
    p.add_argument("--optimizer", default="sgd")
    p.add_argument("--extra", default="", help="more `onebit train` flags for every run, one string")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        write_subset(Path(tmp), args.train_size, args.test_size, args.pool)
        for method in args.methods:
            t0 = time.time()
            result = run([
                "--dataset", "fashion-mnist", "--data_path", tmp, "--model", "resnet20_1w1a", "--method", method,
                "--epochs", str(args.epochs), "-b", str(args.batch_size), "-bt", "500", "--lr", str(args.lr),
                "--results_dir", str(Path(tmp) / "runs"), "--save", method, "--print_freq", "0",
                "--time_estimate", "0", "--seed", "1", "--optimizer", args.optimizer, *shlex.split(args.extra),
            ])
            rows.append((method, args.epochs, result["final_top1"], result["best_top1"], time.time() - t0))
            print(f"  {method}: top-1 {result['final_top1']:.2f} ({time.time() - t0:.0f} s)", flush=True)

    print(f"\nresnet20_1w1a on Fashion-MNIST ({args.train_size} train / {args.test_size} test images, "
          f"{28 // args.pool}x{28 // args.pool}, batch {args.batch_size}, {args.optimizer} lr {args.lr} {args.extra}, "
          f"{args.threads} threads)")
    print(f"| method | epochs | top-1 (%) | best (%) | seconds |\n|---|---|---|---|---|")
    for method, epochs, top1, best, seconds in rows:
        print(f"| {method} | {epochs} | {top1:.2f} | {best:.2f} | {seconds:.0f} |")
    missed = [r[0] for r in rows if r[2] < args.floor]
    if missed:
        print(f"below the {args.floor}% floor: {', '.join(missed)}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
