"""Every binarization method trains resnet20_1w1a on real Fashion-MNIST for a short fixed budget.

A smoke test of the methods at the scale of a real data set: each one must clear a floor
that a broken implementation would not reach. The control run ``broken`` (a sign whose
surrogate passes no gradient) is measured in the same run, so the floor is checked against
what a broken method actually gets. The subset (the first N train / test images of the real
files, average-pooled to 14 x 14 by default to fit a shared CPU, written as idx files to a
temporary folder) goes through the training engine exactly as
``onebit train --dataset fashion-mnist`` would (random crop with 2-pixel padding, flips).

resnet20_1w1a starts slowly whatever the method (every BatchNorm2d gamma = 1e-8, RBNN's init):
even with real weights and activations it is at ~62% train / 52% test after 2 epochs of
10,000 images (28 x 28), so the default floor is 40%, not 70%.

    python benchmarks/methods_fmnist.py                      # all methods + control, defaults below
    python benchmarks/methods_fmnist.py --methods rbnn irnet --pool 1 --epochs 4
    python benchmarks/methods_fmnist.py --methods dorefa:signed=true rbnn:theta_init=uniform

DoReFa's paper activations are {0, 1} = round(clip(x, 0, 1)): in resnet20_1w1a their inputs are
hardtanh outputs that start ~1e-8 (BN gamma), below the 0.5 threshold, so the binary branches
output zeros until gamma grows; ``dorefa:signed=true`` (BiBench's +-1 variant) is listed too.

Prints a table (method, epochs, top-1, seconds) and exits 1 if a method (other than the control and
the paper-mode DoReFa explained above) misses the floor, or if the control reaches it.
"""
from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

from onebit.data.formats import Split, read_idx, write_mnist
from onebit.quant import Method, SteSign, register_method
from onebit.train import run

DATA = Path("/work/shared/data/fashion-mnist")
ALL_METHODS = ["rbnn", "irnet", "bireal", "reactnet", "xnor", "xnorpp", "bnn", "dorefa", "dorefa:signed=true",
               "recu", "fda", "ienet"]


# The control a floor must reject: a sign whose surrogate gradient is zero everywhere (|x| <= 0),
# so nothing reaches the binary weights nor the layers before them through the binary branches.
register_method(Method("broken", partial(SteSign, clip=0.0), partial(SteSign, clip=0.0),
                       "control: binary layers pass no gradient"))


def write_subset(root: Path, train_size: int, test_size: int, pool: int) -> None:
    """The first images of the real files (Fashion-MNIST's order is already shuffled),
    average-pooled ``pool x pool`` (1: the original 28 x 28)."""
    splits = []
    for split, size in (("train", train_size), ("t10k", test_size)):
        images = read_idx(DATA / f"{split}-images-idx3-ubyte.gz", 3)[:size].astype(np.float32)
        n, h, w = images.shape
        images = np.rint(images.reshape(n, h // pool, pool, w // pool, pool).mean((2, 4))).astype(np.uint8)
        splits.append(Split(images[:, None], read_idx(DATA / f"{split}-labels-idx1-ubyte.gz", 1)[:size]))
    write_mnist(root / "fashion-mnist", *splits)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--methods", nargs="+", default=[*ALL_METHODS, "broken"])
    p.add_argument("--model", default="resnet20_1w1a")
    p.add_argument("--train_size", type=int, default=10000)
    p.add_argument("--test_size", type=int, default=2000)
    p.add_argument("--pool", type=int, default=2, help="average-pool the images (2: 14 x 14, 4x cheaper; 1: 28 x 28)")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.005)
    p.add_argument("--threads", type=int, default=1, help="1 is faster than 2 on a busy 2-core machine")
    p.add_argument("--floor", type=float, default=40.0, help="minimum top-1 (%%) of every method but the control")
    p.add_argument("--optimizer", default="adam")
    p.add_argument("--extra", default="", help="more `onebit train` flags for every run, one string")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        write_subset(Path(tmp), args.train_size, args.test_size, args.pool)
        for spec in args.methods:  # NAME or NAME:OPTION=VALUE,OPTION=VALUE (method options)
            method, _, options = spec.partition(":")
            t0 = time.time()
            result = run([
                *(["--method_options", *options.split(",")] if options else []),
                "--dataset", "fashion-mnist", "--data_path", tmp, "--model", args.model, "--method", method,
                "--epochs", str(args.epochs), "-b", str(args.batch_size), "-bt", "500", "--lr", str(args.lr),
                "--results_dir", str(Path(tmp) / "runs"), "--save", spec.replace(":", "_"), "--print_freq", "0",
                "--time_estimate", "0", "--seed", "1", "--optimizer", args.optimizer, *shlex.split(args.extra),
            ])
            rows.append((spec, args.epochs, result["final_top1"], result["best_top1"], time.time() - t0))
            print(f"  {spec}: top-1 {result['final_top1']:.2f} ({time.time() - t0:.0f} s)", flush=True)

    print(f"\n{args.model} on Fashion-MNIST ({args.train_size} train / {args.test_size} test images, "
          f"{28 // args.pool}x{28 // args.pool}, batch {args.batch_size}, {args.optimizer} lr {args.lr} {args.extra}, "
          f"{args.threads} threads)")
    print("| method | epochs | top-1 (%) | best (%) | seconds |\n|---|---|---|---|---|")
    for method, epochs, top1, best, seconds in rows:
        print(f"| {method} | {epochs} | {top1:.2f} | {best:.2f} | {seconds:.0f} |")
    missed = [r[0] for r in rows if r[2] < args.floor and r[0] != "broken" and r[0] != "dorefa"]
    if missed:
        print(f"below the {args.floor}% floor: {', '.join(missed)}")
    control_passes = any(r[0] == "broken" and r[2] >= args.floor for r in rows)
    if control_passes:
        print(f"the {args.floor}% floor does not reject the broken control: raise --floor or the budget")
    return 1 if missed or control_passes else 0


if __name__ == "__main__":
    sys.exit(main())
