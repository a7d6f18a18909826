"""Reading checkpoints: ``torch.load(weights_only=True)`` and a strict load that says what does not fit.

Writing them (atomically, with the optimizer and generator states) is the training engine's
(:mod:`onebit.train.checkpoint`); reading is needed by everything that rebuilds a trained network.
"""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

__all__ = ["CHECKPOINT", "CheckpointError", "read", "load", "load_model_state"]

CHECKPOINT = "checkpoint.pth"
"""The file a run folder's checkpoint is in (``load(run_folder)`` reads it)."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, corrupt, or from another model."""


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
    of the seeds' official code is converted in memory (:mod:`onebit.models.convert`)."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    obj = read(path)
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj.setdefault("path", str(path))
        return obj
    from onebit.models.convert import detect_source, to_checkpoint

    if detect_source(obj):
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
