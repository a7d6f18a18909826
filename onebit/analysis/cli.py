"""``onebit summary``: parameters, memory and BOPs/FLOPs of a registered model or a checkpoint.

    onebit summary --model reactnet_a --dataset imagenet
    onebit summary --checkpoint RUN/model_best.pth --json
"""
from __future__ import annotations

import json

from onebit.models.inputs import DATASET_SHAPES


def add_arguments(parser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="a registered model name (see `onebit models`)")
    source.add_argument("--checkpoint", help="a checkpoint saved by `onebit train` (dict with 'model' and 'config')")
    source.add_argument("--config", help="a seed-002 mmcls .py config (as `onebit train --config`)")
    parser.add_argument(
        "--dataset", choices=sorted(DATASET_SHAPES),
        help="classes, channels and image size of --model (default: the model's own input size, "
             "3 channels, 10 classes); a checkpoint brings its own",
    )
    parser.add_argument("--input_size", type=int, help="image side, overriding the dataset's")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def _model_and_input(args):
    import torch

    from onebit.models import create_model, load_trained_model
    from onebit.models.inputs import model_shape

    if args.checkpoint:
        if args.dataset:
            raise ValueError("--dataset does not apply to --checkpoint: the checkpoint's config names its data set")
        trained = load_trained_model(args.checkpoint)
        return trained.model, trained.name, trained.in_channels, args.input_size or trained.image_size
    if args.config:
        return _config_model(args)
    num_classes, in_channels, side = model_shape(args.model, args.dataset)
    side = args.input_size or side
    with torch.device("meta"):  # counts depend on shapes only: no weights to initialise, no arithmetic
        model = create_model(args.model, num_classes, in_channels=in_channels, image_size=side)
    return model, args.model, in_channels, side


def _config_model(args):
    """The network an mmcls ``.py`` config of seed 002 describes (on the meta device)."""
    import torch

    from onebit.models.config import build_model
    from onebit.models.mmcls_config import load_mmcls_config

    if not str(args.config).endswith(".py"):
        raise ValueError(f"--config takes an mmcls .py config, not {args.config} (for a recipe: --model)")
    config = {"method": None, "a32": False, "w32": False, "pad_value": 0.0, "method_options": [], "rotation_update": 1,
              "use_gpu": False, "model_kwargs": {}, **load_mmcls_config(args.config)}
    config["dataset"] = args.dataset or config["dataset"]
    num_classes, in_channels, side = DATASET_SHAPES[config["dataset"]]
    side = args.input_size or side
    with torch.device("meta"):
        model = build_model(config, num_classes, in_channels, side)
    return model, config["model"], in_channels, side


def main(args) -> int:
    import sys

    from onebit.analysis.summary import summary

    try:
        model, name, in_channels, side = _model_and_input(args)
        result = summary(model, (1, in_channels, side, side))
    except (ValueError, FileNotFoundError) as err:  # CheckpointError is a ValueError
        print(f"onebit summary: error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"model": name, **result.to_dict()}, indent=2))
    else:
        print(f"{name}: input {in_channels}x{side}x{side}\n\n{result}")
    return 0
