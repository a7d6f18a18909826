"""Cost of the exact shard sums against the plain ones: training images/s, side by side.

Four ways to train on one global batch (forward + backward + SGD step of ``--model`` on random
input of the model's image size, global batch ``-b``):

* ``whole``: one process, the whole batch at once (``onebit train``);
* ``turns``: one process taking the 2 shards in turns (``onebit train --shards 2``);
* ``ddp``:   2 processes, DDP's all-reduce (``torchrun ... --no-exact_reduce``);
* ``exact``: 2 processes, all-gather and sums in shard order (``torchrun ...``, the default).

Every process runs on one intra-op thread (torchrun's default), so the one-process modes use
one core and the two-process ones two. The modes take turns in every round, so a busy
machine slows them alike; the table gives the median and best images/s over the rounds.

    python benchmarks/exact_ddp.py                          # resnet20_1w1a, -b 128, 5 rounds
    python benchmarks/exact_ddp.py --model cnn_small_1w1a --size 8 --channels 1 -b 64
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from onebit.models import create_model
from onebit.train.distributed import Distributed, Parallel

MODES = ("whole", "turns", "ddp", "exact")


def worker(args) -> None:
    """One timed run of ``args.mode`` (inside torchrun for the 2-process modes)."""
    d = Distributed.from_env(use_cuda=False)
    torch.manual_seed(0)
    model = create_model(args.model, 10, in_channels=args.channels, image_size=args.size)
    parallel = Parallel(model, d, shards=2 if args.mode == "turns" else 0, exact=args.mode != "ddp")
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(args.batch_size, args.channels, args.size, args.size)
    y = torch.randint(0, 10, (args.batch_size,))
    half = args.batch_size // 2
    shard = lambda r: (x[r * half:(r + 1) * half].clone(), y[r * half:(r + 1) * half].clone())
    batch = shard(d.rank) if d.enabled else [shard(0), shard(1)] if args.mode == "turns" else (x, y)

    def loss(m, images, labels):
        logits = m(images)
        return logits, F.cross_entropy(logits, labels)

    def step():
        opt.zero_grad(set_to_none=True)
        parallel.step(loss, batch)
        opt.step()

    for _ in range(args.warmup):
        step()
    d.barrier()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    d.barrier()
    seconds = time.perf_counter() - start
    if d.is_main:
        print(json.dumps({"mode": args.mode, "images_per_s": args.steps * args.batch_size / seconds}))
    parallel.close()
    d.close()


def launch(args, mode: str) -> float:
    flags = [__file__, "--worker", mode, "--model", args.model, "--size", str(args.size), "--channels",
             str(args.channels), "-b", str(args.batch_size), "--steps", str(args.steps), "--warmup", str(args.warmup)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if mode in ("ddp", "exact"):
        torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or "torchrun"
        cmd = [torchrun, "--standalone", "--nproc_per_node", "2", *flags]
    else:
        cmd = [sys.executable, *flags]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode:
        raise SystemExit(f"{mode} failed:\n{out.stderr[-2000:]}")
    line = next(l for l in out.stdout.splitlines() if l.startswith("{"))
    return json.loads(line)["images_per_s"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet20_1w1a")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("-b", "--batch_size", type=int, default=128)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--worker", choices=MODES, dest="mode", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.mode:
        return worker(args)
    rates = {m: [] for m in MODES}
    for r in range(args.rounds):
        for m in MODES if r % 2 == 0 else reversed(MODES):
            rates[m].append(launch(args, m))
        print(f"round {r + 1}: " + "  ".join(f"{m} {rates[m][-1]:.0f}" for m in MODES), flush=True)
    print(f"\n{args.model}, global batch {args.batch_size}, {args.steps} steps per run, 1 thread per process, "
          f"{args.rounds} rounds")
    print(f"{'mode':8} {'processes':>9} {'median img/s':>13} {'best img/s':>11}")
    for m in MODES:
        print(f"{m:8} {2 if m in ('ddp', 'exact') else 1:>9} {statistics.median(rates[m]):>13.0f} {max(rates[m]):>11.0f}")
    ratio = lambda a, b: statistics.median(x / y for x, y in zip(rates[a], rates[b]))
    print(f"\nexact / ddp (2 processes): {ratio('exact', 'ddp'):.3f}   turns / whole (1 process): "
          f"{ratio('turns', 'whole'):.3f}   (median of per-round ratios)")


if __name__ == "__main__":
    main()
