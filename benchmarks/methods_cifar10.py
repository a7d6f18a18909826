"""CIFAR-10 comparison of RBNN, IR-Net, Bi-Real, ReActNet and BNN on resnet20_1w1a (or ``--model``).

Every method trains with the same recipe through the training engine (``onebit train``),
by default the seeds' CIFAR recipe shortened: SGD momentum 0.9, lr 0.1, weight decay 1e-4
on every parameter, cosine schedule, batch 256, each method's own Tmin/Tmax. The papers'
numbers need 400-1000 epochs (RBNN resnet20 86.5%, IR-Net 85.4-86.5%); a CPU budget of a
few epochs only ranks the methods early in training.

    python benchmarks/methods_cifar10.py                                   # full train set, 10 epochs
    python benchmarks/methods_cifar10.py --train_size 10000 --epochs 3     # reduced budget

``--seeds 1 2 3 4`` trains every method once per seed (mean and spread in the table: a few
epochs on a subset differ by 1-3 points between seeds). Comparing onebit's paths on a short
run: ``--extra=--compile`` (short runs train eagerly by default) against ``--extra=--eager``.

``--train_size`` < 50000 trains on the first images of the real batches (written to a
temporary folder in CIFAR's pickle format); the test set is always the full 10,000 images
unless ``--test_size`` is given.
"""
from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from onebit.data.formats import Split, read_cifar, write_cifar10
from onebit.train import run

DATA = Path("/work/shared/data")
METHODS = ["rbnn", "irnet", "bireal", "reactnet", "bnn"]


def write_subset(root: Path, train_size: int, test_size: int) -> Path:
    """The first ``train_size / 5`` images of each training batch and the first ``test_size`` test images."""
    source = DATA / "cifar-10-batches-py"
    train, test = read_cifar(source, "train", 10), read_cifar(source, "test", 10)
    per_batch = -(-train_size // 5)
    first = np.concatenate([np.arange(b * 10000, b * 10000 + per_batch) for b in range(5)])
    write_cifar10(root / "cifar-10-batches-py", Split(train.images[first], train.labels[first]),
                  Split(test.images[:test_size], test.labels[:test_size]))
    return root


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--methods", nargs="+", default=METHODS)
    p.add_argument("--model", default="resnet20_1w1a")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--train_size", type=int, default=50000)
    p.add_argument("--test_size", type=int, default=10000)
    p.add_argument("--batch_size", type=int, default=256)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seeds", type=int, nargs="+", default=[1])
    p.add_argument("--extra", default="", help="more `onebit train` flags for every run, one string")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        subset = args.train_size < 50000 or args.test_size < 10000
        data_path = str(write_subset(Path(tmp), args.train_size, args.test_size)) if subset else str(DATA)
        for spec in args.methods:  # NAME or NAME:OPTION=VALUE,OPTION=VALUE (method options)
            method, _, options = spec.partition(":")
            finals, bests, t0 = [], [], time.time()
            for seed in args.seeds:
                result = run([
                    *(["--method_options", *options.split(",")] if options else []),
                    "--dataset", "cifar10", "--data_path", data_path, "--model", args.model, "--method", method,
                    "--epochs", str(args.epochs), "-b", str(args.batch_size), "--lr", str(args.lr),
                    "--results_dir", str(Path(tmp) / "runs"), "--save", f"{spec.replace(':', '_')}_seed{seed}",
                    "--print_freq", "0", "--time_estimate", "0", "--seed", str(seed), *shlex.split(args.extra),
                ])
                finals.append(result["final_top1"])
                bests.append(result["best_top1"])
                print(f"  {spec} seed {seed}: top-1 {result['final_top1']:.2f} ({time.time() - t0:.0f} s)", flush=True)
            rows.append((spec, finals, bests, (time.time() - t0) / len(args.seeds)))

    print(f"\n{args.model} on CIFAR-10 ({args.train_size} train / {args.test_size} test images, {args.epochs} epochs, "
          f"batch {args.batch_size}, SGD lr {args.lr} cosine {args.extra}, {args.threads} threads, seeds {args.seeds})")
    print("| method | final top-1 (%) per seed | mean (sd) | best top-1 (%) mean | seconds per run |\n|---|---|---|---|---|")
    for method, finals, bests, seconds in rows:
        sd = statistics.stdev(finals) if len(finals) > 1 else 0.0
        print(f"| {method} | {' '.join(f'{v:.2f}' for v in finals)} | {statistics.mean(finals):.2f} ({sd:.2f}) | "
              f"{statistics.mean(bests):.2f} | {seconds:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
