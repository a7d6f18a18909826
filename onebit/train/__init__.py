"""Training: flags and recipes, the engine, optimizers and schedules, losses, checkpoints,
distributed execution. ``run(argv)`` is ``onebit train`` as a function;
``load_trained_model(path)`` rebuilds a trained network from its checkpoint."""
from __future__ import annotations

from typing import Any

from onebit.train.trained import TrainedModel, load_trained_model

__all__ = ["run", "load_trained_model", "TrainedModel"]


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
