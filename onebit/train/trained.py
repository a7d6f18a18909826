"""A trained network back from the checkpoint ``onebit train`` wrote (for ``onebit summary``,
``onebit export`` and Python users)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

from torch import nn

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
    """The checkpoint's network rebuilt as ``onebit train`` built it from the saved config
    (flags missing from the config take their ``onebit train`` defaults), with its weights,
    in eval mode. Raises :class:`~onebit.train.checkpoint.CheckpointError` (a ``ValueError``)
    naming the problem for a file that is not such a checkpoint or does not fit its model."""
    from onebit.models.inputs import dataset_shape
    from onebit.train import checkpoint as ckpt_io
    from onebit.train.config import build_parser
    from onebit.train.engine import build_model

    checkpoint = ckpt_io.load(path)
    saved = checkpoint.get("config")
    if not isinstance(saved, dict) or "model" not in saved:
        raise ckpt_io.CheckpointError(
            f"{path}: expected a dict with keys 'model' (state_dict) and 'config' (naming its 'model')")
    config = {**vars(build_parser().parse_args([])), **saved}
    num_classes, in_channels, side = dataset_shape(config["dataset"])
    model = build_model(config, SimpleNamespace(num_classes=num_classes, in_channels=in_channels, image_size=side))
    ckpt_io.load_model_state(model, checkpoint, saved["model"])
    return TrainedModel(model.eval(), saved["model"], in_channels, side, saved)
