"""``onebit summary``: parameters, memory and BOPs/FLOPs of a registered model or a checkpoint.

    onebit summary --model reactnet_a --dataset imagenet
    onebit summary --checkpoint RUN/model_best.pth --json
"""
from __future__ import annotations

import json

from onebit.utils import suggest

DATASET_SHAPES: dict[str, tuple[int, int, int]] = {
    # name: (num_classes, in_channels, image side)
    "digits": (10, 1, 8),
    "mnist": (10, 1, 28),
    "fashion-mnist": (10, 1, 28),
    "cifar10": (10, 3, 32),
    "cifar100": (100, 3, 32),
    "tinyimagenet": (200, 3, 64),
    "imagenet": (1000, 3, 224),
}


def add_arguments(parser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="a registered model name (see `onebit models`)")
    source.add_argument("--checkpoint", help="a checkpoint saved by `onebit train` (dict with 'model' and 'config')")
    parser.add_argument(
        "--dataset", choices=sorted(DATASET_SHAPES),
        help="classes, channels and image size of --model (default: the model's own input size, "
             "3 channels, 10 classes); a checkpoint brings its own",
    )
    parser.add_argument("--input_size", type=int, help="image side, overriding the dataset's")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def _dataset_shape(name: str | None, model_name: str) -> tuple[int, int, int]:
    from onebit.models import get_entry

    if name is None:
        return 10, 3, get_entry(model_name).input_size
    if name not in DATASET_SHAPES:
        raise ValueError(f"unknown dataset {name!r}{suggest(name, DATASET_SHAPES)}")
    return DATASET_SHAPES[name]


def _load_checkpoint(path: str):
    """The checkpoint's network, rebuilt as ``onebit train`` builds it from the saved config
    (flags missing from the config take their ``onebit train`` defaults), with its weights."""
    from types import SimpleNamespace

    from onebit.train import checkpoint as ckpt_io
    from onebit.train.config import build_parser
    from onebit.train.engine import build_model

    checkpoint = ckpt_io.load(path)
    saved = checkpoint.get("config")
    if not isinstance(saved, dict) or "model" not in saved:
        raise ValueError(f"{path}: expected a dict with keys 'model' (state_dict) and 'config' (naming its 'model')")
    config = {**vars(build_parser().parse_args([])), **saved}
    num_classes, in_channels, side = _dataset_shape(saved.get("dataset"), saved["model"])
    model = build_model(config, SimpleNamespace(num_classes=num_classes, in_channels=in_channels, image_size=side))
    ckpt_io.load_model_state(model, checkpoint, saved["model"])
    return model, saved["model"], in_channels, side


def _model_and_input(args):
    from onebit.models import create_model

    if args.checkpoint:
        if args.dataset:
            raise ValueError("--dataset does not apply to --checkpoint: the checkpoint's config names its data set")
        model, name, in_channels, side = _load_checkpoint(args.checkpoint)
        return model, name, in_channels, args.input_size or side
    num_classes, in_channels, side = _dataset_shape(args.dataset, args.model)
    side = args.input_size or side
    return create_model(args.model, num_classes, in_channels=in_channels, image_size=side), args.model, in_channels, side


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
