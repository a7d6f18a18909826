"""``onebit export``: write a trained checkpoint (or a registered model) as a bit-packed ``.onebit`` file.

    onebit export RUN/model_best.pth -o model.onebit
    onebit export --model birealnet18 -o bireal.onebit      # random weights, e.g. to benchmark
"""
from __future__ import annotations

import sys
from pathlib import Path


def add_arguments(parser) -> None:
    parser.add_argument("checkpoint", nargs="?", help="a checkpoint saved by `onebit train` (dict with 'model' and 'config')")
    parser.add_argument("--model", help="export a registered model with its initial weights instead of a checkpoint")
    parser.add_argument("--dataset", help="with --model: classes, channels and image size of this data set")
    parser.add_argument("-o", "--output", required=True, help="the .onebit file to write")
    parser.add_argument("--input_size", type=int, help="image side to trace with (default: the data set's)")
    parser.add_argument("--no_check", action="store_true", help="skip running the exported file against PyTorch")


def model_and_shape(checkpoint: str | None, model_name: str | None, dataset: str | None, input_size: int | None):
    """``(model, info, input shape)`` from a checkpoint or a registered model name."""
    from onebit.models import create_model, load_trained_model
    from onebit.models.inputs import model_shape

    if (checkpoint is None) == (model_name is None):
        raise ValueError("give either a checkpoint or --model NAME")
    if checkpoint is not None:
        if dataset:
            raise ValueError("--dataset does not apply to a checkpoint: its config names its data set")
        trained = load_trained_model(checkpoint)
        model, name, in_channels, side = trained.model, trained.name, trained.in_channels, trained.image_size
    else:
        num_classes, in_channels, side = model_shape(model_name, dataset)
        name = model_name
        model = create_model(name, num_classes, in_channels=in_channels, image_size=input_size or side)
    side = input_size or side
    info = {"name": name, "in_channels": in_channels, "image_size": side}
    if checkpoint is not None:
        info["checkpoint"] = str(checkpoint)
    return model.eval(), info, (1, in_channels, side, side)


def main(args) -> int:
    import torch

    from onebit.deploy import ExportError, export, load

    try:
        model, info, shape = model_and_shape(args.checkpoint, args.model, args.dataset, args.input_size)
        example = torch.randn(shape, generator=torch.Generator().manual_seed(0))
        program = export(model, example, args.output, model_info=info, check=not args.no_check)
        runtime = load(args.output)
    except (ValueError, FileNotFoundError, ExportError) as err:
        print(f"onebit export: error: {err}", file=sys.stderr)
        return 2
    size = Path(args.output).stat().st_size
    print(f"wrote {args.output}: {info['name']}, input {'x'.join(map(str, shape[1:]))}, {size / 1e6:.3f} MB")
    print(runtime.summary())
    if program.check is not None:
        print(f"check on a random input: max relative logit difference {program.check['max_rel']:.2e}, "
              f"top-1 {'agrees' if program.check['top1_agree'] == 1.0 else 'DIFFERS'}")
    return 0
