"""Training: flags and recipes, the engine, optimizers and schedules, losses, checkpoints,
distributed execution. ``run(argv)`` is ``onebit train`` as a function (a trained network comes
back with :func:`onebit.models.load_trained_model`)."""
from __future__ import annotations

from typing import Any

__all__ = ["run"]


def run(argv: list[str] | None = None) -> dict[str, Any]:
    """Train (or with ``-e`` evaluate) as ``onebit train ARGV`` does; returns the results
    (``best_top1``, ``final_top1``, ``final_top5``, ``seconds``, ``run_dir``)."""
    from onebit.train.config import resolve
    from onebit.train.engine import Trainer

    config = resolve(argv)
    trainer = Trainer(config)
    if config["evaluate"]:
        return trainer.evaluate_checkpoint(config["evaluate"])
    return trainer.fit()
