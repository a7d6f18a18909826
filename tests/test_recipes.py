"""The recipes of configs/: every file parses, builds its network and trains a step; the listing."""
from __future__ import annotations

import pytest
import torch

from onebit.train.config import resolve
from onebit.train.optim import set_lr

torch.set_num_threads(1)


def test_lr_gamma_scales_each_step_milestone():
    # The Training-Tricks stage 2 schedule: 2e-4, x0.2 at epochs 150, 250 and 320.
    config = resolve(["--optimizer", "adam", "--lr", "2e-4", "--lr_type", "step", "--lr_decay_step", "150", "250", "320",
                      "--lr_gamma", "0.2", "--epochs", "350"])
    optimizer = torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    lrs = {e: set_lr(optimizer, e, config) for e in (0, 149, 150, 249, 250, 320, 349)}
    expected = {0: 2e-4, 149: 2e-4, 150: 4e-5, 249: 4e-5, 250: 8e-6, 320: 1.6e-6, 349: 1.6e-6}
    assert lrs == pytest.approx(expected, rel=1e-12)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1.6e-6)
    assert resolve([])["lr_gamma"] == 0.1  # MultiStepLR's default, as the seeds
