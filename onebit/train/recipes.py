"""The recipe files of ``configs/``: finding, validating and listing them (``onebit recipes``).

A recipe is a YAML file of ``onebit train`` flag values plus the recipe-only keys
``description``, ``paper`` and ``target_top1`` (the top-1 the source reports for the full
schedule), see :mod:`onebit.train.config`. Files in a ``_base_`` folder are only inherited
from and are not recipes themselves. A recipe's name is its path under the root without
``.yaml``, e.g. ``rbnn/cifar10_resnet20_1w1a_1000ep``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onebit.models.checkpoint import CheckpointError

__all__ = ["Recipe", "default_root", "find_recipe_files", "load_recipe_file", "list_recipes"]


@dataclass(frozen=True)
class Recipe:
    name: str
    path: Path
    config: dict[str, Any]
    """Every ``onebit train`` flag as this recipe sets it (defaults < bases < the file)."""

    @property
    def method(self) -> str:
        """The method the recipe trains with: its ``method`` key, else the model's own."""
        from onebit.models import get_entry

        return self.config["method"] or get_entry(self.config["model"]).default_method

    def summary(self) -> dict[str, Any]:
        """The recipe's main settings, as ``onebit recipes --json`` prints them."""
        c = self.config
        return {"name": self.name, "path": str(self.path), "model": c["model"], "method": self.method,
                "dataset": c["dataset"], "epochs": c["epochs"], "batch_size": c["batch_size"],
                "optimizer": c["optimizer"], "lr": c["lr"], "lr_type": c["lr_type"],
                "weight_decay": c["weight_decay"], "stage1": c["stage1"], "teacher": c["teacher"],
                "target_top1": c.get("target_top1"), "paper": c.get("paper"), "description": c.get("description")}


def default_root() -> Path:
    """``configs/`` of the source tree this package lives in, else ``./configs``."""
    beside_package = Path(__file__).resolve().parents[2] / "configs"
    return beside_package if beside_package.is_dir() else Path("configs")


def find_recipe_files(root: str | Path) -> list[Path]:
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"recipe folder not found: {root} (expected a folder of .yaml recipes, e.g. configs/)")
    return sorted(p for p in root.rglob("*.yaml") if "_base_" not in p.relative_to(root).parts)


def load_recipe_file(path: str | Path, root: str | Path | None = None) -> Recipe:
    """Resolve one recipe exactly as ``onebit train --config PATH`` does, and check its
    recipe-only keys. Raises ``ValueError`` naming the file."""
    from onebit.train.config import resolve

    path = Path(path)
    name = str(path.relative_to(root).with_suffix("")) if root else path.stem
    try:
        config = resolve(["--config", str(path)])
    except (ValueError, FileNotFoundError, CheckpointError) as e:
        raise ValueError(f"{path}: {e}") from None
    target = config.get("target_top1")
    is_percentage = isinstance(target, (int, float)) and not isinstance(target, bool) and 0 <= target <= 100
    if target is not None and not is_percentage:
        raise ValueError(f"{path}: target_top1 must be a percentage in [0, 100] or null, got {target!r}")
    for key in ("description", "paper"):
        if config.get(key) is not None and not isinstance(config[key], str):
            raise ValueError(f"{path}: {key} must be text, got {type(config[key]).__name__}")
    return Recipe(name, path, config)


def list_recipes(root: str | Path | None = None) -> tuple[list[Recipe], list[str]]:
    """Every recipe under ``root`` (default :func:`default_root`), and the errors of those that
    do not resolve (one message per file)."""
    root = Path(root) if root is not None else default_root()
    recipes, errors = [], []
    for path in find_recipe_files(root):
        try:
            recipes.append(load_recipe_file(path, root))
        except ValueError as e:
            errors.append(str(e))
    return recipes, errors


# ---------------------------------------------------------------- the command

def add_arguments(parser) -> None:
    parser.add_argument("match", nargs="?", default="", help="only recipes whose name contains this text")
    parser.add_argument("--root", default=None, help="folder of recipes (default: the repository's configs/)")
    parser.add_argument("--json", action="store_true", help="print every recipe's main settings as JSON")


def _target(value) -> str:
    return "-" if value is None else f"{value:g}"


def main(args) -> int:
    import sys

    try:
        recipes, errors = list_recipes(args.root)
    except FileNotFoundError as e:
        print(f"onebit recipes: error: {e}", file=sys.stderr)
        return 2
    recipes = [r for r in recipes if args.match in r.name]
    if args.json:
        print(json.dumps([r.summary() for r in recipes], indent=2))
    else:
        width = max([len(r.name) for r in recipes] + [6])
        print(f"{'recipe':<{width}}  {'model':<22} {'method':<8} {'dataset':<13} {'epochs':>6}  target top-1")
        for r in recipes:
            c = r.config
            print(f"{r.name:<{width}}  {c['model']:<22} {r.method:<8} {c['dataset']:<13} {c['epochs']:>6}  "
                  f"{_target(c.get('target_top1'))}")
    for message in errors:
        print(f"onebit recipes: error: {message}", file=sys.stderr)
    return 2 if errors else 0
