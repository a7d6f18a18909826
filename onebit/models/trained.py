"""A trained network back from the checkpoint ``onebit train`` wrote (for ``onebit summary``,
``onebit export`` and Python users)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from onebit.models.checkpoint import CheckpointError, load, load_model_state
from onebit.models.config import build_model
from onebit.models.inputs import dataset_shape

__all__ = ["TrainedModel", "load_trained_model"]


@dataclass
class TrainedModel:
    model: nn.Module
    name: str
    """The registered model name (``onebit models``)."""
    in_channels: int
    image_size: int
    """The input side of the data set the model was trained on."""
    config: dict
    """The run's saved configuration."""


def load_trained_model(path: str | Path) -> TrainedModel:
    """The checkpoint's network rebuilt as ``onebit train`` built it from the saved config (keys
    missing from an older config take :data:`~onebit.models.config.MODEL_DEFAULTS`), with its
    weights, in eval mode. Raises :class:`~onebit.models.checkpoint.CheckpointError` (a
    ``ValueError``) naming the problem for a file that is not such a checkpoint or does not fit its model."""
    checkpoint = load(path)
    saved = checkpoint.get("config")
    if not isinstance(saved, dict) or "model" not in saved or "dataset" not in saved:
        raise CheckpointError(
            f"{path}: expected a dict with keys 'model' (state_dict) and 'config' (naming its 'model' and 'dataset')")
    num_classes, in_channels, side = dataset_shape(saved["dataset"])
    model = build_model(saved, num_classes, in_channels, side)
    load_model_state(model, checkpoint, saved["model"])
    return TrainedModel(model.eval(), saved["model"], in_channels, side, saved)
