"""Optimizers and learning-rate schedules.

The schedule is a closed form of the epoch (set at every epoch start), so it needs no
state of its own and a resumed run continues it exactly. Semantics follow RBNN's main.py:

* ``--warm_up``: epochs 0..4 use ``lr * (e + 1) / 5``; the schedule then runs over the
  remaining ``E - 5`` epochs.
* ``cos``: ``lr * (1 + cos(pi * p)) / 2`` with ``p = (e - w) / (E - w)`` (CosineAnnealingLR
  stepped once per epoch, eta_min 0);
* ``step``: ``lr * gamma ** (number of milestones <= e)`` (MultiStepLR; ``--lr_gamma``, default 0.1);
* ``linear``: ``lr * (1 - p)`` (ReActNet's per-epoch linear decay).

mmcls schedules: ``--lr_per_iter`` evaluates ``p`` at the fractional epoch ``e + b / B`` of batch
``b`` of ``B`` (``by_epoch=False``); ``--warmup_iters N`` multiplies the first ``N`` batches by
``1 - (1 - i / N) (1 - r)`` at global batch ``i``, ``r = --warmup_ratio`` (mmcv's linear warm-up).
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

WARM_UP_EPOCHS = 5


def lr_factor(epoch: float, epochs: int, lr_type: str, warm_up: bool = False, milestones=None,
              gamma: float = 0.1) -> float:
    """Multiplier of the base learning rate at ``epoch`` (0-based, fractional within an epoch) of ``epochs``."""
    w = WARM_UP_EPOCHS if warm_up else 0
    if epoch < w:
        return (int(epoch) + 1) / w
    if lr_type == "step":
        return gamma ** sum(epoch >= m for m in (milestones or []))
    p = (epoch - w) / max(epochs - w, 1)
    if lr_type == "cos":
        return 0.5 * (1.0 + math.cos(math.pi * p))
    if lr_type == "linear":
        return 1.0 - p
    raise ValueError(f"unknown lr_type {lr_type!r}")


def parameter_groups(model: nn.Module, weight_decay: float, scope: str = "all") -> list[dict[str, Any]]:
    """Split the parameters by where weight decay applies.

    ``all``: every parameter (the seeds' SGD, RBNN's theta included: that is what unlocks
    its rotated weights); ``conv``: only 4-D convolution weights (official ReActNet/Bi-Real
    stage 1); ``no_bn``: all but batch-norm parameters (mmclassification)."""
    if scope not in ("all", "conv", "no_bn"):
        raise ValueError(f"unknown weight-decay scope {scope!r}")
    bn = {id(p) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) for p in m.parameters()}
    decay, rest = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        wanted = scope == "all" or (scope == "conv" and p.dim() == 4) or (scope == "no_bn" and id(p) not in bn)
        (decay if wanted else rest).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    return groups + ([{"params": rest, "weight_decay": 0.0}] if rest else [])


def build_optimizer(model: nn.Module, config: dict[str, Any]) -> torch.optim.Optimizer:
    """SGD (momentum; weight decay on every parameter by default, as the seeds) or Adam."""
    groups = parameter_groups(model, config["weight_decay"], config.get("weight_decay_scope", "all"))
    if config["optimizer"] == "sgd":
        return torch.optim.SGD(groups, lr=config["lr"], momentum=config["momentum"],
                               nesterov=bool(config.get("nesterov")))
    return torch.optim.Adam(groups, lr=config["lr"])


def per_batch(config: dict[str, Any]) -> bool:
    """Whether the learning rate changes within an epoch (mmcls schedules)."""
    return bool(config.get("lr_per_iter") or config.get("warmup_iters"))


def set_lr(optimizer: torch.optim.Optimizer, epoch: int, config: dict[str, Any], step: int = 0,
           steps: int = 1) -> float:
    """Set the learning rate of batch ``step`` of ``steps`` in ``epoch``."""
    if config["lr_type"] == "step" and not config.get("lr_decay_step"):
        raise ValueError("--lr_type step needs milestones: --lr_decay_step 30 60 90")
    position = epoch + step / steps if config.get("lr_per_iter") else epoch
    factor = lr_factor(position, config["epochs"], config["lr_type"], config["warm_up"], config["lr_decay_step"],
                       config.get("lr_gamma", 0.1))
    iteration, warmup = epoch * steps + step, config.get("warmup_iters", 0)
    if iteration < warmup:
        factor *= 1 - (1 - iteration / warmup) * (1 - config["warmup_ratio"])
    lr = config["lr"] * factor
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr
