"""``onebit models``: the registered architectures with their parameter counts."""
from __future__ import annotations


def add_arguments(parser) -> None:
    parser.add_argument("--num_classes", type=int, default=10, help="classes of the head (default 10)")


def main(args) -> int:
    import torch

    from onebit.models import create_model, list_models

    print(f"{'model':<37} {'params':>10}  {'method':<8} source")
    for entry in list_models():
        with torch.device("meta"):  # parameter counts only
            model = create_model(entry.name, args.num_classes)
        n = sum(p.numel() for p in model.parameters())
        print(f"{entry.name:<37} {n / 1e6:>9.3f}M  {entry.default_method:<8} {entry.source}")
    return 0
