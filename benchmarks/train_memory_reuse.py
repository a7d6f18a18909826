"""What keeping freed memory (onebit.train.speed.keep_freed_cpu_memory) gives a training process.

``onebit train`` runs one path per process, and glibc's malloc adapts its thresholds to what the
process has allocated so far; train_throughput.py runs every path in one process, where the
setting (process-wide) reaches the eager rows too. Here every measurement is a fresh process
running one path's training step (built as train_throughput.py builds it) with the setting as
onebit applies it ("kept") or without it ("glibc default"), the two alternating over the rounds.
``--epoch DATA_PATH`` measures whole ``onebit train`` runs instead (one compiled epoch of
``--config``'s model on real CIFAR-10, evaluation included, the default path): the wall time,
peak resident memory and test top-1 of each process.

    python benchmarks/train_memory_reuse.py --methods irnet rbnn --paths default eager
    python benchmarks/train_memory_reuse.py --methods irnet --epoch ../shared/data
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import json, resource, sys, time, torch
sys.path.insert(0, {here!r})
from onebit.train import speed
if not {kept}:
    speed.keep_freed_cpu_memory = lambda: False
if {kept} and {eager}:  # onebit train --eager leaves malloc alone: the setting by hand, to show its effect
    speed.keep_freed_cpu_memory()
import train_throughput
torch.set_num_threads({threads})
step = train_throughput.make_step({method!r}, {model!r}, {batch}, {size}, train_throughput.PATHS[{path!r}])
for _ in range({warmup}):
    step()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
start = time.perf_counter()
for _ in range({steps}):
    step()
seconds = (time.perf_counter() - start) / {steps}
touched = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) * resource.getpagesize() / {steps} / 2**20
print(json.dumps([seconds, touched]))
"""


EPOCH_CHILD = """
import resource, time
from onebit.train import speed
if not {kept}:
    speed.keep_freed_cpu_memory = lambda: False
from onebit.cli import main
start = time.perf_counter()
main({argv!r})
print(time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
"""


def run_epoch(args, method: str, kept: bool, results_dir: str) -> tuple[float, float, str]:
    """(wall seconds, peak resident GiB, best test top-1) of one ``onebit train`` epoch, compiled, in a fresh process."""
    argv = ["train", "--model", args.config.split(":")[0], "--method", method, "--dataset", "cifar10",
            "--data_path", args.epoch, "--epochs", "1", "--compile", "--print_freq", "100000",
            "--results_dir", results_dir]
    out = subprocess.run([sys.executable, "-c", EPOCH_CHILD.format(kept=kept, argv=argv)], capture_output=True,
                         text=True, check=True).stdout
    seconds, gib = out.strip().splitlines()[-1].split()
    top1 = re.search(r"best test top-1 (\S+)%", out)
    return float(seconds), float(gib), top1.group(1) if top1 else "?"


def run(args, method: str, path: str, kept: bool) -> tuple[float, float]:
    model, size, batch = args.config.split(":")
    code = CHILD.format(here=str(Path(__file__).resolve().parent), kept=kept, eager=path == "eager",
                        threads=args.threads, method=method, model=model, batch=int(batch), size=int(size),
                        path=path, warmup=args.warmup, steps=args.steps)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return tuple(json.loads(out.strip().splitlines()[-1]))


def alternating(rounds: int, measure) -> dict[bool, list]:
    """``measure(kept)`` without and with the setting, taking turns for ``rounds`` rounds: {kept: [results]}."""
    results = {False: [], True: []}
    for _ in range(rounds):
        for kept in results:
            results[kept].append(measure(kept))
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="resnet20_1w1a:32:256", metavar="MODEL:SIZE:BATCH")
    p.add_argument("--methods", nargs="+", default=["irnet", "rbnn"])
    p.add_argument("--paths", nargs="+", default=["default", "eager"], choices=["default", "eager"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=4, help="untimed steps per process (compilation included)")
    p.add_argument("--steps", type=int, default=5, help="timed steps per process")
    p.add_argument("--rounds", type=int, default=3, help="processes per row")
    p.add_argument("--epoch", metavar="DATA_PATH", help="time whole onebit train epochs on the CIFAR-10 found here")
    args = p.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from train_throughput import cpu_description

    print(f"CPU: {cpu_description()}")
    if args.epoch:
        epochs(args)
        return
    print(f"{args.config}, {args.threads} thread(s), {args.rounds} processes per row, {args.steps} timed steps each")
    print("| method | path | malloc | s/step, median | page faults/step (MiB) | speed-up of kept |")
    print("|---|---|---|---|---|---|")
    for method in args.methods:
        for path in args.paths:
            results = alternating(args.rounds, lambda kept: run(args, method, path, kept))
            plain = statistics.median(r[0] for r in results[False])
            for kept in (False, True):
                t = statistics.median(r[0] for r in results[kept])
                touched = statistics.median(r[1] for r in results[kept])
                print(f"| {method} | {path} | {'kept' if kept else 'glibc default'} | {t:.3f} | {touched:.0f} | "
                      f"{plain / t:.2f}x |")


def epochs(args) -> None:
    print(f"onebit train, {args.config.split(':')[0]}, 1 compiled epoch of CIFAR-10 from {args.epoch} (evaluation "
          f"included), {args.rounds} processes per row after one untimed run that fills the compile cache")
    print("| method | malloc | wall s, median | each | peak resident (GiB), median | test top-1 (%) | speed-up of kept |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as results_dir:
        for method in args.methods:
            run_epoch(args, method, True, results_dir)
            results = alternating(args.rounds, lambda kept: run_epoch(args, method, kept, results_dir))
            plain = statistics.median(r[0] for r in results[False])
            for kept in (False, True):
                wall = [r[0] for r in results[kept]]
                print(f"| {method} | {'kept' if kept else 'glibc default'} | {statistics.median(wall):.1f} | "
                      f"{' '.join(f'{w:.1f}' for w in wall)} | {statistics.median(r[1] for r in results[kept]):.2f} | "
                      f"{' '.join(sorted({r[2] for r in results[kept]}))} | {plain / statistics.median(wall):.2f}x |")


if __name__ == "__main__":
    main()
