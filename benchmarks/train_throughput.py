"""Training-step throughput per binarization method, and the cost of RBNN's rotation update.

One training step = forward + backward + SGD step (+ the method's after-step hooks) of
``resnet20_1w1a`` (default) at batch 256 on CIFAR-sized random input. The methods take turns
in every round, so a busy machine slows them alike; each round times ``--steps`` steps and
records wall time and process CPU time (all threads; other processes disturb it less). The
table gives medians over the rounds and the best round.

RBNN's rotation update (three alternating Procrustes iterations over every binary layer) runs
once per epoch, outside the step; it is timed separately per model on a warmed-up process.

    python benchmarks/train_throughput.py                                # every method, 2 threads
    python benchmarks/train_throughput.py --methods rbnn irnet bnn --rounds 12 --steps 1
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from onebit.models import create_model
from onebit.quant import list_methods
from onebit.quant.rbnn import RbnnWeight
from onebit.quant.schedules import after_step_hooks, set_epoch_temperature

ROTATION_MODELS = (("resnet20_1w1a", 32), ("vgg_small_1w1a", 32), ("resnet18_1w1a", 32), ("resnet18_1w1a", 224))


def make_step(method: str, model_name: str, batch: int, size: int, channels: int):
    torch.manual_seed(0)
    model = create_model(model_name, 10, in_channels=channels, image_size=size, method=method)
    set_epoch_temperature(model, 0, 1, 1.0, 1.0)  # scheduled surrogates in a mid-training state
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    x, y = torch.randn(batch, channels, size, size), torch.randint(0, 10, (batch,))
    after_step = after_step_hooks(model)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
        for hook in after_step:
            hook()

    return step


def rotation_update_seconds(model_name: str, image_size: int, repeats: int = 3) -> tuple[int, float, float]:
    """(binary layers, first call, median warm call) of one rotation update of the whole model."""
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
    p.add_argument("--model", default="resnet20_1w1a")
    p.add_argument("--methods", nargs="+", default=[m.name for m in list_methods()])
    p.add_argument("--baseline", default="irnet", help="the method the last column compares with")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=2, help="timed steps per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--no_rotation", action="store_true", help="skip the rotation-update table")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    steps = {m: make_step(m, args.model, args.batch, args.size, args.channels) for m in args.methods}
    for step in steps.values():  # warm-up: allocator, first-call costs
        step()
    wall = {m: [] for m in steps}
    cpu = {m: [] for m in steps}
    for _ in range(args.rounds):
        for m, step in steps.items():
            c0, w0 = time.process_time(), time.perf_counter()
            for _ in range(args.steps):
                step()
            cpu[m].append((time.process_time() - c0) / args.steps)
            wall[m].append((time.perf_counter() - w0) / args.steps)

    base = statistics.median(wall.get(args.baseline) or wall[args.methods[0]])
    base_name = args.baseline if args.baseline in wall else args.methods[0]
    print(f"{args.model} training step, batch {args.batch}, {args.channels}x{args.size}x{args.size}, "
          f"{args.threads} thread(s), {args.rounds} rounds x {args.steps} steps")
    print(f"| method | wall s/step, median | best | img/s | CPU s/step, median | step time / {base_name} |")
    print("|---|---|---|---|---|---|")
    for m in sorted(wall, key=lambda m: statistics.median(wall[m])):
        w = statistics.median(wall[m])
        print(f"| {m} | {w:.3f} | {min(wall[m]):.3f} | {args.batch / w:.0f} | {statistics.median(cpu[m]):.3f} "
              f"| {w / base:.2f} |")

    if not args.no_rotation:
        print("\nRBNN rotation update, all binary layers, once per epoch (wall seconds)")
        print("| model | binary layers | first call | warm |\n|---|---|---|---|")
        for name, size in ROTATION_MODELS:
            layers, first, warm = rotation_update_seconds(name, size)
            print(f"| {name} ({size}x{size}) | {layers} | {first:.3f} | {warm:.3f} |")


if __name__ == "__main__":
    main()
