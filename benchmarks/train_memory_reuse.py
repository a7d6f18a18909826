"""What keeping freed memory (onebit.train.speed.keep_freed_cpu_memory) gives a training process.

``onebit train`` runs one path per process, and glibc's malloc adapts its thresholds to what the
process has allocated so far; train_throughput.py runs every path in one process, where the
setting (process-wide) reaches the eager rows too. Here every measurement is a fresh process
running one path's training step (built as train_throughput.py builds it) with the setting as
onebit applies it ("kept") or without it ("glibc default"), the two alternating over the rounds.

    python benchmarks/train_memory_reuse.py --methods irnet rbnn --paths default eager
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
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


def run(args, method: str, path: str, kept: bool) -> tuple[float, float]:
    model, size, batch = args.config.split(":")
    code = CHILD.format(here=str(Path(__file__).resolve().parent), kept=kept, eager=path == "eager",
                        threads=args.threads, method=method, model=model, batch=int(batch), size=int(size),
                        path=path, warmup=args.warmup, steps=args.steps)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return tuple(json.loads(out.strip().splitlines()[-1]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="resnet20_1w1a:32:256", metavar="MODEL:SIZE:BATCH")
    p.add_argument("--methods", nargs="+", default=["irnet", "rbnn"])
    p.add_argument("--paths", nargs="+", default=["default", "eager"], choices=["default", "eager"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=4, help="untimed steps per process (compilation included)")
    p.add_argument("--steps", type=int, default=5, help="timed steps per process")
    p.add_argument("--rounds", type=int, default=3, help="processes per row")
    args = p.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from train_throughput import cpu_description

    print(f"CPU: {cpu_description()}")
    print(f"{args.config}, {args.threads} thread(s), {args.rounds} processes per row, {args.steps} timed steps each")
    print("| method | path | malloc | s/step, median | page faults/step (MiB) | speed-up of kept |")
    print("|---|---|---|---|---|---|")
    for method in args.methods:
        for path in args.paths:
            results = {True: [], False: []}
            for _ in range(args.rounds):
                for kept in (False, True):
                    results[kept].append(run(args, method, path, kept))
            plain = statistics.median(r[0] for r in results[False])
            for kept in (False, True):
                t = statistics.median(r[0] for r in results[kept])
                touched = statistics.median(r[1] for r in results[kept])
                print(f"| {method} | {path} | {'kept' if kept else 'glibc default'} | {t:.3f} | {touched:.0f} | "
                      f"{plain / t:.2f}x |")


if __name__ == "__main__":
    main()
