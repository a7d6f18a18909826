"""Two-stage training (ReActNet, Real-to-Binary, Training-Tricks): stage 2 starts from the stage-1 checkpoint.

Stage 1 trains binary activations with real weights (``binary_type=(True, False)``), stage 2
binarizes the weights too. Both stages build the *same* architecture, so every parameter and
buffer has the same name and shape; only the quantizers differ, and the state a quantizer
owns (buffers or parameters under ``input_quantizer.``/``weight_quantizer.``) may exist in
one stage only. Anything else that does not match is an error listing the keys: a load that
silently skips weights is how the official ReActNet-A step 2 started its convolutions from
scratch (flat ``weights`` vs 4-D ``weight`` loaded with ``strict=False``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from onebit.models.checkpoint import CheckpointError, load, load_model_state

__all__ = ["StageLoad", "load_stage1", "read_checkpoint", "QUANTIZER_MODULES"]

QUANTIZER_MODULES = ("input_quantizer", "weight_quantizer")
"""Sub-modules whose state may exist in one stage only."""


@dataclass
class StageLoad:
    """What ``load_stage1`` did."""

    loaded: list[str]
    """State-dict keys copied from the stage-1 checkpoint."""
    new: list[str]
    """Quantizer state that stage 1 did not have."""
    rebuilt: list[str]
    """Quantizers whose whole state is new: built again on the loaded layer, so that what they
    derive from the weights at build time (e.g. RBNN's alpha = mean |W|) comes from stage 1."""
    dropped: list[str]
    """Quantizer state of stage 1 that the stage-2 model does not have."""


def read_checkpoint(source: str | Path | dict) -> dict:
    """A checkpoint as ``{"model": state_dict, ...}`` from a path (an onebit checkpoint or a
    bare state_dict file, see :func:`onebit.train.checkpoint.load`) or an in-memory dict."""
    if isinstance(source, (str, Path)):
        if not Path(source).exists():
            raise CheckpointError(f"stage-1 checkpoint not found: {source} (run the step-1 recipe first, "
                                  "or point --stage1 at its checkpoint)")
        return load(source)
    if isinstance(source, dict) and isinstance(source.get("model"), dict):
        return source
    if isinstance(source, dict) and source and all(isinstance(v, torch.Tensor) for v in source.values()):
        return {"model": source, "path": "the given state_dict"}
    raise ValueError("expected a checkpoint path, a checkpoint dict with a 'model' state_dict, or a state_dict")


def _is_quantizer_state(key: str) -> bool:
    return any(part in QUANTIZER_MODULES for part in key.split(".")[:-1])


def load_stage1(model: nn.Module, checkpoint: str | Path | dict) -> StageLoad:
    """Initialise the stage-2 ``model`` from the stage-1 ``checkpoint`` (path or dict).

    Raises :class:`~onebit.train.checkpoint.CheckpointError` (a ``ValueError``) listing the
    missing, unexpected and shape-mismatched keys when anything but quantizer state differs.
    """
    ckpt = read_checkpoint(checkpoint)
    state = {k.removeprefix("module."): v for k, v in ckpt["model"].items()}
    own = model.state_dict()
    new = sorted(k for k in own.keys() - state.keys() if _is_quantizer_state(k))
    dropped = sorted(k for k in state.keys() - own.keys() if _is_quantizer_state(k))
    for key in dropped:
        del state[key]
    loaded = sorted(state)
    state.update({k: own[k] for k in new})
    try:
        load_model_state(model, {**ckpt, "model": state}, getattr(model, "onebit_name", None))
    except CheckpointError as e:
        raise CheckpointError(
            "the stage-1 checkpoint cannot initialise this stage-2 model (both stages must build the same "
            f"architecture, with the same parameter names and shapes; only the binarization changes): {e}"
        ) from None
    return StageLoad(loaded=loaded, new=new, rebuilt=_rebuild_new_quantizers(model, set(new)), dropped=dropped)


def _rebuild_new_quantizers(model: nn.Module, new: set[str]) -> list[str]:
    rebuilt = []
    for name, layer in model.named_modules():
        for attr in QUANTIZER_MODULES:
            quantizer = getattr(layer, attr, None)
            if not isinstance(quantizer, nn.Module) or not callable(getattr(quantizer, "build", None)):
                continue
            prefix = f"{name}.{attr}" if name else attr
            keys = {f"{prefix}.{k}" for k in quantizer.state_dict()}
            if keys and keys <= new:
                quantizer.build(layer)
                rebuilt.append(prefix)
    return rebuilt
