"""``onebit train``: the seeds' ``main.py`` command line, on CPU or GPU, one process or many."""
from __future__ import annotations

import sys

from onebit.models.checkpoint import CheckpointError
from onebit.train.config import add_train_arguments, resolve


def add_arguments(parser) -> None:
    add_train_arguments(parser)


USER_ERRORS = (ValueError, FileNotFoundError, CheckpointError, FloatingPointError)


def _fail(error: Exception) -> int:
    print(f"onebit train: error: {error}", file=sys.stderr)
    return 2


def parse(parser, argv: list[str]) -> dict:
    """Flags, recipe file and (with --resume / -e) the saved run's config, resolved."""
    try:
        return resolve(argv, parser)
    except USER_ERRORS as e:
        raise SystemExit(_fail(e)) from None


def main(config: dict) -> int:
    from onebit.train.engine import Trainer

    try:
        trainer = Trainer(config)
        if config["evaluate"]:
            trainer.evaluate_checkpoint(config["evaluate"])
        else:
            trainer.fit()
    except USER_ERRORS as e:
        return _fail(e)
    return 0
