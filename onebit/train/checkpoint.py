"""Checkpoints: written atomically, loaded safely (``torch.load(weights_only=True)``).

A checkpoint is a plain dict of tensors and Python primitives:

* ``model``: the state_dict (no ``module.`` prefix), ``model_name``, ``config`` (resolved flags);
* ``optimizer``: its state_dict; ``epoch``: the epoch to run next; ``step``: batches of that
  epoch already done (non-zero only for a checkpoint written on SIGTERM/SIGINT mid-epoch);
* ``best_top1``, ``train_sums`` (running loss/accuracy sums of a partial epoch);
* ``rng``: the torch/NumPy/Python generator states at the save. Together with the
  per-epoch seeding of the engine they make a resumed run bit-identical to an
  uninterrupted one on the CPU.

Writing goes to a temporary file in the same folder, flushed and fsynced, then renamed
over the target (atomic on POSIX): a crash mid-write leaves the previous checkpoint intact.
"""
from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from onebit.models.checkpoint import CHECKPOINT, CheckpointError  # reading checkpoints lives there

FORMAT_VERSION = 1
BEST = "model_best.pth"


def save_atomic(obj: Any, path: str | Path) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def rng_state() -> dict[str, Any]:
    py = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
        "numpy_pos": int(np.random.get_state()[2]),
        "python": [py[0], list(py[1]), py[2]],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    random.setstate((state["python"][0], tuple(state["python"][1]), state["python"][2]))


def find_resume_checkpoint(resume: bool | str, results_dir: str, save: str, model: str, dataset: str) -> Path:
    """The checkpoint ``--resume`` means: a given file or run folder; with a bare flag,
    ``results_dir/save``, or without ``--save`` the newest run of this model and dataset."""
    if isinstance(resume, str):
        path = Path(resume)
    elif save:
        path = Path(results_dir) / save
    else:
        runs = sorted(Path(results_dir).glob(f"{model}_{dataset}_*/{CHECKPOINT}"), key=lambda p: p.stat().st_mtime)
        if not runs:
            raise CheckpointError(f"--resume: no run of {model} on {dataset} in {results_dir} (give the run folder)")
        path = runs[-1]
    path = path / CHECKPOINT if path.is_dir() else path
    if not path.is_file():
        raise CheckpointError(f"--resume: checkpoint not found: {path}")
    return path
