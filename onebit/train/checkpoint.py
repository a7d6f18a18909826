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
import pickle
import random
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT_VERSION = 1
CHECKPOINT = "checkpoint.pth"
BEST = "model_best.pth"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, corrupt, or from another model."""


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


def read(path: str | Path) -> Any:
    """The object a checkpoint file holds (tensors and Python primitives only)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, OSError) as e:
        # torch's weights-only refusal is a page of advice about weights_only=False: not ours to give
        reason = "not a PyTorch file of tensors" if isinstance(e, pickle.UnpicklingError) else str(e).splitlines()[0]
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated or corrupt?): {reason}") from None


def load(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint (ours, or a bare state_dict, returned as ``{"model": sd}``); a checkpoint
    of the seeds' official code is converted in memory (:mod:`onebit.train.importer`)."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    obj = read(path)
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj.setdefault("path", str(path))
        return obj
    from onebit.models.convert import detect_source

    if detect_source(obj):
        from onebit.train.importer import to_checkpoint

        return to_checkpoint(obj, path)
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return {"model": obj, "path": str(path)}
    raise CheckpointError(f"{path} holds neither an onebit checkpoint nor a state_dict")


def load_model_state(model: torch.nn.Module, ckpt: dict[str, Any], model_name: str | None = None) -> None:
    """Load ``ckpt["model"]`` into ``model`` strictly, with errors that say what does not fit."""
    source = ckpt.get("path", "checkpoint")
    saved_name = ckpt.get("model_name")
    if model_name and saved_name and saved_name != model_name:
        raise CheckpointError(f"{source} is a checkpoint of model {saved_name!r}, not {model_name!r}")
    state = {k.removeprefix("module."): v for k, v in ckpt["model"].items()}
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
                  for k in own.keys() & state.keys() if own[k].shape != state[k].shape]
    if missing or unexpected or mismatched:
        parts = [f"{label}: {', '.join(items[:6])}{' ...' if len(items) > 6 else ''}"
                 for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched))
                 if items]
        raise CheckpointError(f"{source} does not fit model {model_name or ''}: " + "; ".join(parts))
    model.load_state_dict(state)


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
