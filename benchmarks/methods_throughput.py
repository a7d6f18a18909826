"""RBNN's training step next to IR-Net's, and the cost of RBNN's rotation update per epoch.

One training step = forward + backward + SGD step of ``resnet20_1w1a`` at batch 256 on
32 x 32 inputs. The methods take turns in every round (so a busy machine slows them alike)
and each round's time is the process CPU time of the step (all threads), which other
processes on the machine disturb less than wall time (also given); the table gives the
median and the best round. The rotation update (three alternating Procrustes iterations over all binary
layers, once per epoch) is timed separately per model, on a warmed-up process.

    python benchmarks/methods_throughput.py                     # 2 threads, 12 rounds
    python benchmarks/methods_throughput.py --methods rbnn irnet bnn --rounds 20
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from onebit.models import create_model
from onebit.quant.rbnn import RbnnWeight


def make_step(method: str, batch: int):
    torch.manual_seed(0)
    model = create_model("resnet20_1w1a", 10, method=method)
    for m in model.modules():
        if callable(getattr(m, "set_temperature", None)):
            m.set_temperature(1.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    after_step = [m.after_step for m in model.modules() if callable(getattr(m, "after_step", None))]

    def step() -> tuple[float, float]:
        cpu, wall = time.process_time(), time.perf_counter()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
        for hook in after_step:
            hook()
        return time.process_time() - cpu, time.perf_counter() - wall

    return step


def rotation_update_seconds(model_name: str, image_size: int, repeats: int) -> tuple[int, float, float]:
    torch.manual_seed(0)
    model = create_model(model_name, 10, image_size=image_size, method="rbnn")
    quantizers = [m for m in model.modules() if isinstance(m, RbnnWeight)]
    times = []
    for _ in range(repeats + 1):  # the first call pays LAPACK's warm-up
        start = time.perf_counter()
        for q in quantizers:
            q.update_rotation()
        times.append(time.perf_counter() - start)
    return len(quantizers), times[0], statistics.median(times[1:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--methods", nargs="+", default=["rbnn", "irnet"])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=12)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    steps = {m: make_step(m, args.batch) for m in args.methods}
    for step in steps.values():  # warm-up
        step()
    times = {m: [] for m in steps}
    for _ in range(args.rounds):
        for m, step in steps.items():
            times[m].append(step())
    base = statistics.median(cpu for cpu, _ in times[args.methods[-1]])
    print(f"resnet20_1w1a training step, batch {args.batch}, {args.threads} threads, {args.rounds} rounds")
    print(f"| method | CPU s/step, median | best | wall s/step, median | CPU median / {args.methods[-1]} |")
    print("|---|---|---|---|---|")
    for m, t in times.items():
        cpu = [c for c, _ in t]
        wall = statistics.median(w for _, w in t)
        print(f"| {m} | {statistics.median(cpu):.3f} | {min(cpu):.3f} | {wall:.3f} | {statistics.median(cpu) / base:.2f} |")

    print("\nRBNN rotation update, all binary layers, once per epoch (wall seconds)")
    print("| model | binary layers | first call (s) | warm (s) |\n|---|---|---|---|")
    for name, size in (("resnet20_1w1a", 32), ("vgg_small_1w1a", 32), ("resnet18_1w1a", 32), ("resnet18_1w1a", 224)):
        layers, first, warm = rotation_update_seconds(name, size, repeats=3)
        print(f"| {name} ({size}x{size}) | {layers} | {first:.3f} | {warm:.3f} |")


if __name__ == "__main__":
    main()
