"""``onebit import``: an official checkpoint of the seeds' code as an onebit checkpoint.

    onebit import model_best.pth.tar -o rbnn_r20.pth            # source detected
    onebit import checkpoint.th -o irnet_r20.pth --from irnet
    onebit train -e model_best.pth.tar --data_path DATA          # converted in memory

The converted file is an ordinary onebit checkpoint (``model``, ``model_name``, ``config``)
plus ``imported_from`` (source format, file, the epoch and top-1 it recorded) and
``preprocessing``: the official test-time normalisation, which ``onebit train -e`` checks
against the data set's before it evaluates (see :mod:`onebit.models.convert`).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from onebit.models.checkpoint import CheckpointError, read
from onebit.models.convert import SOURCES, to_checkpoint
from onebit.train import checkpoint as ckpt_io

__all__ = ["import_checkpoint", "check_preprocessing"]


def import_checkpoint(path: str | Path, source: str | None = None, model: str | None = None) -> dict[str, Any]:
    """Read and convert the official checkpoint at ``path``."""
    return {"format_version": ckpt_io.FORMAT_VERSION, **to_checkpoint(read(path), path, source, model)}


def check_preprocessing(checkpoint: dict[str, Any], mean, std) -> None:
    """Raise if the data's normalisation differs from the one the checkpoint was trained with."""
    pre = checkpoint.get("preprocessing")
    if not pre:
        return
    same = all(abs(a - b) < 1e-6 for a, b in zip((*pre["mean"], *pre["std"]), (*mean, *std)))
    if not same or len(pre["mean"]) != len(mean):
        raise CheckpointError(
            f"{checkpoint.get('path', 'checkpoint')} was trained on inputs normalised with mean {tuple(pre['mean'])} "
            f"std {tuple(pre['std'])} ({pre.get('origin', 'official code')}); this data set uses mean {tuple(mean)} "
            f"std {tuple(std)}: its top-1 would not be the official one")


def add_arguments(parser) -> None:
    parser.add_argument("source", metavar="SRC", help="checkpoint written by the official code of a seed")
    parser.add_argument("-o", "--output", required=True, metavar="FILE", help="the onebit checkpoint to write")
    parser.add_argument("--from", dest="fmt", choices=SOURCES, help="source format (default: detected)")
    parser.add_argument("--model", help="onebit model to map it onto (default: the file's architecture)")


def main(args) -> int:
    try:
        checkpoint = import_checkpoint(args.source, args.fmt, args.model)
        checkpoint.pop("path")
        ckpt_io.save_atomic(checkpoint, args.output)
    except (ValueError, FileNotFoundError) as e:  # CheckpointError is a ValueError
        print(f"onebit import: error: {e}", file=sys.stderr)
        return 2
    source = checkpoint["imported_from"]
    recorded = {k: v for k, v in source.items() if k not in ("format", "file")}
    print(f"{args.source}: {source['format']} checkpoint -> {args.output} (onebit model {checkpoint['model_name']}, "
          f"method {checkpoint['config']['method']}, {checkpoint['config']['dataset']}, "
          f"{len(checkpoint['model'])} tensors{', recorded ' + str(recorded) if recorded else ''})")
    return 0
