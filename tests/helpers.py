"""Helpers shared by the test modules (imported as ``helpers``: pytest puts tests/ on the path)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from onebit.layers import BinaryConv2d, BinaryLinear
from onebit.quant import Quantizer

# Environment for onebit subprocesses in tests: one OpenMP thread. Their networks are tiny, and on
# two cores shared with other work a two-thread process stalls at every barrier whose other thread
# waits for a core (measured: a 15 s test took 100-180 s on a loaded machine).
ONE_THREAD_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)

    def uniform(t, lo, hi):
        t.data.copy_(torch.rand(t.shape, generator=g) * (hi - lo) + lo)

    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            uniform(m.running_mean, -1, 1)
            uniform(m.running_var, 0.5, 2)
            uniform(m.weight, -1.5, 1.5)
            uniform(m.bias, -1, 1)
        elif isinstance(m, (BinaryConv2d, BinaryLinear)):
            exponent = torch.randint(-3, 2, (m.weight.shape[0],) + (1,) * (m.weight.dim() - 1), generator=g)
            m.weight.data = torch.where(torch.rand(m.weight.shape, generator=g) < 0.5, -1.0, 1.0) * 2.0 ** exponent
        for name, p in m.named_parameters(recurse=False):
            if name in ("threshold", "gamma", "zeta") or (name == "bias" and not isinstance(m, (nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm))):
                uniform(p, -0.3, 0.3)
            elif name == "alpha" and isinstance(m, Quantizer):  # a learned weight scale (RBNN)
                p.data = 2.0 ** torch.randint(-2, 2, p.shape, generator=g).float()
    return model.eval()


def fit_batch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float) -> nn.Module:
    """``steps`` Adam steps of cross-entropy on one batch (a small model must be able to fit it)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model


def checkpoint_weights(path) -> dict[str, torch.Tensor]:
    """The model tensors of an onebit checkpoint file."""
    return torch.load(path, weights_only=True)["model"]


def assert_same_weights(a, b) -> None:
    """Two checkpoint files hold the same model tensors, bit for bit."""
    wa, wb = checkpoint_weights(a), checkpoint_weights(b)
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, f"tensors differ: {different[:5]}"


def run_metrics(folder) -> list[dict]:
    """The per-epoch rows of a run folder's metrics.jsonl."""
    return [json.loads(line) for line in (Path(folder) / "metrics.jsonl").read_text().splitlines()]
