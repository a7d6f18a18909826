"""The packages stack one way: quant -> layers -> models -> data / analysis -> train / deploy -> onebit.cli.

Every ``import`` of every module (at the top or inside a function) is read from the source: a
module may import its own package and the packages below it, never one above it nor a peer
(analysis only counts what models compute, so the training log can show its summary; deploy
rebuilds trained networks from onebit.models, not train). A package's command module
(``cli.py``, ``deploy/commands/``) belongs to its package and imports no other command module;
only ``onebit/cli.py``, ``onebit/__main__.py`` and ``onebit/__init__.py`` sit above everything.
"""
from __future__ import annotations

import ast
from pathlib import Path

import onebit

ROOT = Path(onebit.__file__).resolve().parent
RANK = {"utils": 0, "quant": 1, "layers": 2, "models": 3, "data": 4, "analysis": 4, "train": 5, "deploy": 5}
ROOT_MODULES = ("onebit", "onebit.cli", "onebit.__main__")


def layer(module: str) -> tuple[str, int]:
    """(package, rank) of a dotted module name inside onebit (the root modules: rank above all)."""
    if module in ROOT_MODULES:
        return "", max(RANK.values()) + 1
    package = module.split(".")[1]
    return package, RANK[package]


def is_command(module: str) -> bool:
    parts = module.split(".")
    return module not in ROOT_MODULES and (parts[-1] == "cli" or "commands" in parts)


def imported_modules(path: Path, module: str) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert not node.level, f"{module}: relative import (the package uses absolute ones)"
            if node.module:
                found.add(node.module)
                found |= {f"{node.module}.{a.name}" for a in node.names}  # from onebit import train
    return {m for m in found if m.split(".")[0] == "onebit" and m != "onebit"}


def modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def upward(module: str, target: str) -> bool:
    """Whether ``module`` importing ``target`` breaks the stacking."""
    if module in ROOT_MODULES:
        return False
    if is_command(target) and not target.startswith(module):
        return True
    (package, rank), (target_package, target_rank) = layer(module), layer(target)
    return target_package != package and target_rank >= rank


def test_no_module_imports_upward_or_sideways():
    known = modules()
    found = [f"{module} imports {target}" for module, path in sorted(known.items())
             for target in sorted(imported_modules(path, module))
             if target in known and upward(module, target)]  # "from onebit.models import create_model": a name
    assert not found, "\n".join(found)


def test_the_rule_and_the_reader(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from onebit.train import checkpoint\nfrom onebit.layers.binary import BinaryConv2d\n")
    assert imported_modules(probe, "onebit.deploy.probe") >= {"onebit.train.checkpoint", "onebit.layers.binary"}
    assert upward("onebit.deploy.export", "onebit.train.checkpoint")
    assert upward("onebit.quant.methods", "onebit.layers.scale")
    assert upward("onebit.data.build", "onebit.analysis.summary")
    assert upward("onebit.deploy.commands.export", "onebit.analysis.cli")
    assert not upward("onebit.train.engine", "onebit.models.config")
    assert not upward("onebit.deploy.commands.export", "onebit.models.trained")
