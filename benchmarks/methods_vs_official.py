"""A method trained in onebit against its official trainer: mean and spread over seeds.

onebit's side: ``onebit train --config RECIPE --epochs E --seed S`` for each seed, on the first
``--train_images`` CIFAR-10 training images (written in CIFAR-10's own format to the results folder)
and the full test set, one process per seed, ``--jobs`` at a time, each with ``OMP_NUM_THREADS=--threads``
and ``nice``. A seed whose ``metrics.jsonl`` already holds E epochs is read, not run again.

Official side (optional): ``--official_logs DIR``, every ``*.log`` there being the console output of one
run of the official trainer (e.g. htqin/IR-Net ``CIFAR-10/ResNet20/1w1a/trainer.py``), whose test top-1
after each epoch is the `` * Prec@1 X`` line. This script neither contains nor runs official code: run it
yourself, outside the project, with the same budget (BENCHMARKS.md says how it was done).

Printed: per-seed best and final top-1 of both sides, mean, sample standard deviation and range per side,
and the difference of the means with its standard error.

    python benchmarks/methods_vs_official.py --data_path /work/shared/data --seeds 1 2 3 --epochs 4 \\
        --train_images 10000 --official_logs /work/scratch/irnet-official-logs
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from recipes_cifar10 import write_cifar10_subset  # same folder

REPO = Path(__file__).resolve().parent.parent
DEFAULT_RECIPE = "configs/irnet/cifar10_resnet20_1w1a.yaml"
OFFICIAL_EPOCH_LINE = re.compile(r"^ \* Prec@1 ([0-9.]+)", re.M)


def onebit_argv(args, seed: int, data_path: str) -> list[str]:
    return ["--config", str(REPO / args.recipe), "--data_path", data_path, "--epochs", str(args.epochs),
            "--seed", str(seed), "--results_dir", str(args.results_dir), "--save", f"seed{seed}",
            "--print_freq", "0", "--time_estimate", "0", *args.extra]


def read_onebit(run_dir: Path) -> list[float]:
    """Test top-1 after each epoch of a finished or partial onebit run."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line)["test_top1"] for line in path.read_text().splitlines() if line.strip()]


def read_official(folder: Path, epochs: int) -> dict[str, list[float]]:
    """``{log name: test top-1 after each epoch}`` of every ``*.log`` in ``folder`` (each must hold ``epochs``)."""
    runs = {}
    for log in sorted(folder.glob("*.log")):
        curve = [float(x) for x in OFFICIAL_EPOCH_LINE.findall(log.read_text(errors="replace"))]
        if len(curve) != epochs:
            raise SystemExit(f"error: {log} holds {len(curve)} epochs of test top-1, not {epochs}")
        runs[log.stem] = curve
    if not runs:
        raise SystemExit(f"error: no '*.log' file in {folder}")
    return runs


def run_onebit(args) -> dict[str, list[float]]:
    """Train the seeds not finished yet, ``--jobs`` at a time; ``{seedS: curve}``."""
    data_path = str(write_cifar10_subset(args.data_path, args.results_dir / "data", args.train_images, 10000))
    todo = [s for s in args.seeds if len(read_onebit(args.results_dir / f"seed{s}")) < args.epochs]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    running: list[tuple[int, subprocess.Popen]] = []
    while todo or running:
        while todo and len(running) < args.jobs:
            seed = todo.pop(0)
            argv = onebit_argv(args, seed, data_path)
            print(f"$ OMP_NUM_THREADS={args.threads} nice -n {args.nice} onebit train {' '.join(argv)}", flush=True)
            log = open(args.results_dir / f"seed{seed}.out", "w")
            cmd = ["nice", "-n", str(args.nice), sys.executable, "-m", "onebit", "train", *argv]
            running.append((seed, subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)))
        time.sleep(5)
        for seed, proc in list(running):
            if proc.poll() is not None:
                running.remove((seed, proc))
                if proc.returncode:
                    raise SystemExit(f"error: seed {seed} failed (exit {proc.returncode}), "
                                     f"see {args.results_dir / f'seed{seed}.out'}")
    return {f"seed{s}": read_onebit(args.results_dir / f"seed{s}") for s in args.seeds}


def spread(values: list[float]) -> dict[str, float]:
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else float("nan")
    return {"n": n, "mean": mean, "std": std, "min": min(values), "max": max(values)}


def summarise(name: str, runs: dict[str, list[float]]) -> dict:
    best = [max(c) for c in runs.values()]
    final = [c[-1] for c in runs.values()]
    return {"side": name, "runs": runs, "best": spread(best), "final": spread(final)}


def print_tables(sides: list[dict]) -> None:
    epochs = max(len(c) for s in sides for c in s["runs"].values())
    print("\n| side | run | " + " | ".join(f"ep {i + 1}" for i in range(epochs)) + " | best | final |")
    print("|---|---|" + "---|" * (epochs + 2))
    for s in sides:
        for run, curve in s["runs"].items():
            print(f"| {s['side']} | {run} | " + " | ".join(f"{v:.2f}" for v in curve)
                  + f" | {max(curve):.2f} | {curve[-1]:.2f} |")
    print("\n| side | runs | best: mean +- std (min-max) | final: mean +- std (min-max) |")
    print("|---|---|---|---|")
    for s in sides:
        cells = [f"{s[k]['mean']:.2f} +- {s[k]['std']:.2f} ({s[k]['min']:.2f}-{s[k]['max']:.2f})"
                 for k in ("best", "final")]
        print(f"| {s['side']} | {s['best']['n']} | {cells[0]} | {cells[1]} |")
    if len(sides) == 2:
        for k in ("best", "final"):
            a, b = sides[0][k], sides[1][k]
            se = math.sqrt(a["std"] ** 2 / a["n"] + b["std"] ** 2 / b["n"])
            print(f"{k}: onebit - official = {a['mean'] - b['mean']:+.2f} (standard error {se:.2f})")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--recipe", default=DEFAULT_RECIPE, help=f"onebit recipe (default {DEFAULT_RECIPE})")
    p.add_argument("--data_path", default="/work/shared/data", help="folder holding cifar-10-batches-py")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--train_images", type=int, default=50000, help="train on the first N images (default all)")
    p.add_argument("--threads", type=int, default=1, help="threads per run (default 1)")
    p.add_argument("--jobs", type=int, default=2, help="runs at a time (default 2)")
    p.add_argument("--nice", type=int, default=10, help="niceness of the runs (default 10)")
    p.add_argument("--results_dir", type=Path, default=Path("results/methods_vs_official"))
    p.add_argument("--official_logs", type=Path, default=None, help="folder of the official trainer's *.log files")
    p.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more `onebit train` flags (put last)")
    args = p.parse_args()
    if args.official_logs is not None and not args.official_logs.is_dir():
        raise SystemExit(f"error: --official_logs {args.official_logs} is not a folder")
    args.results_dir.mkdir(parents=True, exist_ok=True)
    sides = [summarise("onebit", run_onebit(args))]
    if args.official_logs is not None:
        sides.append(summarise("official", read_official(args.official_logs, args.epochs)))
    print(f"\n{args.recipe}: {args.epochs} epochs on the first {args.train_images} training images, "
          f"10,000 test images, {args.threads} thread(s) per run")
    print_tables(sides)
    if args.json:
        args.json.write_text(json.dumps({"recipe": args.recipe, "epochs": args.epochs,
                                         "train_images": args.train_images, "sides": sides}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
