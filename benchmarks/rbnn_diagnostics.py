"""Two diagnostics behind BENCHMARKS.md's RBNN findings, on real CIFAR-10 images (no training run).

``gammas``: the first SGD steps of ``resnet20_bireal_1w1a`` (RBNN init: every BatchNorm2d gamma
1e-8) at lr 0.1 and at 0.02 (the first warm-up epoch): the stem's gamma and the mean |gamma| of
the others, and the batch accuracy. At lr 0.1 they jump to O(1-10) and every hardtanh saturates.

``temperature``: a ``resnet20_1w1a`` trained for a few SGD steps at t = 0.1, then the gradient norm
of the stem convolution on one batch at several temperatures t, for RBNN and IR-Net: how the
activation surrogate's gain above t = 1 compounds over the binary layers.

    python benchmarks/rbnn_diagnostics.py --data_path /work/shared/data
    python benchmarks/rbnn_diagnostics.py --data_path /work/shared/data --only temperature
"""
from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import torch
import torch.nn.functional as F

from onebit.models import create_model
from onebit.quant.schedules import set_epoch_temperature, start_epoch


def cifar_images(data_path: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` images of ``data_batch_1``, standardised per channel."""
    with open(Path(data_path) / "cifar-10-batches-py" / "data_batch_1", "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    x = torch.tensor(batch[b"data"][:n]).float().view(-1, 3, 32, 32) / 255
    x = (x - x.mean((0, 2, 3), keepdim=True)) / x.std((0, 2, 3), keepdim=True)
    return x, torch.tensor(batch[b"labels"][:n])


def sgd_steps(model, x, y, lr: float, steps: int, batch: int = 128, report=None) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    for step in range(steps):
        i = step * batch % len(y)
        logits = model(x[i : i + batch])
        loss = F.cross_entropy(logits, y[i : i + batch])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if report:
            report(step, loss, (logits.argmax(1) == y[i : i + batch]).float().mean())


def gammas(x, y, steps: int) -> None:
    print("resnet20_bireal_1w1a, rbnn, t = 0.01 (epoch 0 of RBNN's schedule), batch 128")
    print("| lr | step | stem gamma | mean abs gamma, other BNs | batch top-1 | loss |\n|---|---|---|---|---|---|")
    for lr in (0.1, 0.02):
        torch.manual_seed(0)
        model = create_model("resnet20_bireal_1w1a", 10, method="rbnn")
        start_epoch(model, 0, 1, 0.01, 0.01)  # t itself (a range of one point) and RBNN's rotations
        bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]

        def report(step, loss, acc):
            if step in (0, 1, 10) or (step + 1) % 40 == 0:
                others = torch.stack([b.weight.abs().mean() for b in bns[1:]]).mean()
                print(f"| {lr} | {step + 1} | {bns[0].weight.abs().mean():.3g} | {others:.3g} | {acc:.2f} | {loss:.3f} |")

        sgd_steps(model, x, y, lr, steps, report=report)


def temperature(x, y, steps: int) -> None:
    print(f"\nresnet20_1w1a after {steps} SGD steps (lr 0.1) at t = 0.1: gradient norm of the stem convolution")
    print("| method | t = 0.1 | 0.63 | 1 | 2.5 | 10 |\n|---|---|---|---|---|---|")
    for method in ("rbnn", "irnet"):
        torch.manual_seed(0)
        model = create_model("resnet20_1w1a", 10, method=method)
        start_epoch(model, 0, 1, 0.1, 0.1)
        sgd_steps(model, x, y, 0.1, steps)
        norms = []
        for t in (0.1, 0.63, 1.0, 2.5, 10.0):
            set_epoch_temperature(model, 0, 1, t, t)
            model.zero_grad()
            F.cross_entropy(model(x[:256]), y[:256]).backward()
            norms.append(f"{model.conv1.weight.grad.norm():.3g}")
        print(f"| {method} | {' | '.join(norms)} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data_path", default="/work/shared/data", help="folder holding cifar-10-batches-py")
    p.add_argument("--only", choices=("gammas", "temperature"))
    p.add_argument("--steps", type=int, default=120)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    x, y = cifar_images(args.data_path, 5120)
    if args.only != "temperature":
        gammas(x, y, args.steps)
    if args.only != "gammas":
        temperature(x, y, args.steps)


if __name__ == "__main__":
    main()
