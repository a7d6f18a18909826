"""One training step of a small network in each mode of ``onebit.train.distributed``, and RBNN's
rotation update under processes: called by test_distributed.py in its own process, and run as a
script under torchrun (``torchrun --nproc_per_node 2 distributed_steps.py OUT``: every mode in one
launch, each rank saving its results to ``OUT.<rank>``)."""
from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

from onebit.models import create_model
from onebit.quant.rbnn import RbnnWeight, random_orthogonal
from onebit.train.distributed import Distributed, Parallel


def step(mode: str, d: Distributed) -> dict[str, list[torch.Tensor]]:
    """Gradients and buffers after one step on a fixed global batch of 64 in ``mode``: "whole" (one
    process, one shard), "shards" (one process, 2 shards in turns), "exact" or "plain" (DDP) under
    2 processes, each taking its half."""
    torch.manual_seed(0)
    model = create_model("cnn_small_1w1a", 10, in_channels=1, image_size=8)
    x, y = torch.randn(64, 1, 8, 8), torch.randint(0, 10, (64,))
    parallel = Parallel(model, d, shards=2 if mode == "shards" else 0, exact=mode != "plain")
    part = lambda r: (x[32 * r:32 * (r + 1)].clone(), y[32 * r:32 * (r + 1)].clone())  # noqa: E731
    batch = part(d.rank) if d.enabled else [part(0), part(1)] if mode == "shards" else (x, y)

    def loss(m, images, labels):
        logits = m(images)
        return logits, F.cross_entropy(logits, labels)

    parallel.step(loss, batch)
    parallel.close()
    return {"grad": [p.grad for p in model.parameters()], "buffers": list(model.buffers())}


def rotation_update(d: Distributed) -> dict[str, list[torch.Tensor]]:
    """RBNN rotations before and after the epoch-start update (rank 0's) and its broadcast."""
    torch.manual_seed(0)
    model = create_model("cnn_small_1w1a", 10, in_channels=1, image_size=8, method="rbnn")
    quantizers = [m for m in model.modules() if isinstance(m, RbnnWeight)]
    torch.manual_seed(1 + d.rank)
    for q in quantizers:  # every rank starts from other rotations: only a broadcast makes them agree
        q.R1.copy_(random_orthogonal(q.a))
    before = [q.R1.clone() for q in quantizers]
    for q in quantizers:  # what the engine does at the start of an epoch
        q.on_epoch_start(0, 1)
    d.broadcast_buffers(model)
    return {"before": before, "after": [q.R1.clone() for q in quantizers]}


if __name__ == "__main__":
    d = Distributed.from_env(use_cuda=False)
    results = {mode: step(mode, d) for mode in ("exact", "plain")}
    results["rotation"] = rotation_update(d)
    torch.save(results, f"{sys.argv[1]}.{d.rank}")
    d.close()
