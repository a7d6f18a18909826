"""The ``onebit`` command: one sub-command per job, each defined in the module that owns it.

Each module named here provides ``add_arguments(parser)`` and ``main(args) -> int``, and
optionally ``parse(parser, argv)`` when its arguments need more than ``parser.parse_args``
(``train`` merges recipe files). A module is imported only when its sub-command runs, so
``onebit --help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from onebit.utils import ArgumentParser, suggest

COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("onebit.train.cli", "train a binary network (drop-in for the seeds' main.py)"),
    "models": ("onebit.models.cli", "list the registered models with parameter counts"),
    "methods": ("onebit.quant.cli", "list the binarization methods with their options"),
    "recipes": ("onebit.train.recipes", "the recipes of configs/ (paper settings, target top-1), checked"),
    "import": ("onebit.train.importer", "convert a checkpoint of the seeds' official code (RBNN, IR-Net, ReActNet, mmcls)"),
    "summary": ("onebit.analysis.cli", "parameters, memory and BOPs/FLOPs/OPs by bit-width, per layer"),
    "plot": ("onebit.analysis.plots", "PNG figures of training runs: curves, lr and t, sign flips, weight histograms"),
    "export": ("onebit.deploy.commands.export", "write a checkpoint as a bit-packed .onebit file for the 1-bit CPU runtime"),
    "infer": ("onebit.deploy.commands.infer", "evaluate an exported .onebit model on a data set"),
    "bench": ("onebit.deploy.commands.bench", "latency of an exported model next to float PyTorch"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="onebit", description="Binary neural networks in PyTorch.")
    parser.add_argument("command", help="one of: " + ", ".join(COMMANDS))
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        print("\ncommands:\n" + "\n".join(f"  {k:<10} {v[1]}" for k, v in COMMANDS.items()))
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        parser.error(f"unknown command {command!r}{suggest(command, COMMANDS)}")
    module = importlib.import_module(COMMANDS[command][0])
    sub = ArgumentParser(prog=f"onebit {command}", description=COMMANDS[command][1])
    module.add_arguments(sub)
    args = module.parse(sub, rest) if hasattr(module, "parse") else sub.parse_args(rest)
    return int(module.main(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
