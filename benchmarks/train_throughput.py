"""Training-step throughput of a binary network on this machine, per binarization method.

Measures forward + backward + SGD step of ``resnet20_1w1a`` (default) at batch 256 on
CIFAR-sized input, for each method side by side: the methods take turns in every round
and the best round of each is kept, so a busy machine slows them alike and the ratios
stay meaningful. RBNN's once-per-epoch rotation update is timed separately.

    python benchmarks/train_throughput.py --threads 2
    python benchmarks/train_throughput.py --methods rbnn irnet --rounds 5
"""
from __future__ import annotations

import argparse
import time

import torch

from onebit.models import create_model
from onebit.quant import list_methods


def step_fn(method: str, model_name: str, batch: int, size: int, channels: int):
    torch.manual_seed(0)
    model = create_model(model_name, 10, in_channels=channels, image_size=size, method=method)
    model.train()
    for m in model.modules():  # put scheduled surrogates in their mid-training state
        if hasattr(m, "set_temperature"):
            m.set_temperature(1.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(batch, channels, size, size)
    y = torch.randint(0, 10, (batch,))
    after_step = [m.after_step for m in model.modules() if hasattr(m, "after_step")]

    def step():
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        for hook in after_step:
            hook()

    def epoch_start():
        for m in model.modules():
            if hasattr(m, "on_epoch_start"):
                m.on_epoch_start(0, 1)

    return step, epoch_start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="resnet20_1w1a")
    p.add_argument("--methods", nargs="+", default=[m.name for m in list_methods()])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=5, help="timed steps per round")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    runs = {m: step_fn(m, args.model, args.batch, args.size, args.channels) for m in args.methods}
    best = {m: float("inf") for m in runs}
    rotation = {}
    for m, (step, epoch_start) in runs.items():  # warm-up (allocator, first-call costs)
        epoch_start()
        step()
    for _ in range(args.rounds):
        for m, (step, epoch_start) in runs.items():
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step()
            best[m] = min(best[m], (time.perf_counter() - t0) / args.steps)
            t0 = time.perf_counter()
            epoch_start()
            rotation[m] = min(rotation.get(m, float("inf")), time.perf_counter() - t0)

    base = best.get("bnn", min(best.values()))
    print(f"{args.model}, batch {args.batch}, {args.channels}x{args.size}x{args.size}, {args.threads} thread(s), "
          f"best of {args.rounds} rounds x {args.steps} steps")
    print(f"{'method':<10} {'s/step':>8} {'img/s':>8} {'vs bnn':>7} {'epoch-start hooks (s)':>22}")
    for m in sorted(best, key=best.get):
        print(f"{m:<10} {best[m]:>8.3f} {args.batch / best[m]:>8.0f} {base / best[m]:>6.2f}x {rotation[m]:>22.4f}")


if __name__ == "__main__":
    main()
