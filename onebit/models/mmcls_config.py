"""Seed 002's mmclassification Python configs (``configs/baseline/*/*.py``) as ``onebit train`` flags.

Reading: such a file is Python, but only assignments of literals are accepted -- numbers,
strings, ``None``/``True``/``False``, lists, tuples, dicts, ``dict(...)`` calls with keyword
arguments and ``**name`` unpacking, names assigned earlier in the same file, unary minus and
arithmetic on numbers. Nothing is executed or imported (a restricted reader of the syntax
tree, no mmcv/mmcls needed); anything else is an error naming its line. ``_base_`` (a file
or a list, relative to the file) is merged first, dicts recursively, as mmcv does
(``_delete_=True`` replaces instead of merging).

Mapping (:func:`to_flags`): every key is either mapped to a flag, checked to be a value onebit
implements (e.g. ``style='pytorch'``), or run bookkeeping without effect on the result (logging,
checkpoint interval, ``work_dir``...: :data:`BOOKKEEPING`). Anything else is an error naming the
key: nothing is dropped silently.
"""
from __future__ import annotations

import ast
import copy
import operator
from pathlib import Path
from typing import Any

from onebit.utils import suggest

__all__ = ["read_config", "read_assignments", "to_flags", "load_mmcls_config", "BACKBONES"]

_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}


class _Reader:
    def __init__(self, path: Path | str):
        self.path = path
        self.names: dict[str, Any] = {}

    def fail(self, node: ast.AST, what: str) -> ValueError:
        return ValueError(f"{self.path}:{getattr(node, 'lineno', '?')}: {what} (configs are read, not run: "
                          "only assignments of literals, dict(...) and names are accepted)")

    def value(self, node: ast.AST) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [self.value(e) for e in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.Dict):
            out: dict[Any, Any] = {}
            for k, v in zip(node.keys, node.values):
                if k is None:
                    out.update(self.mapping(v))
                else:
                    out[self.value(k)] = self.value(v)
            return out
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict" and not node.args:
            out = {}
            for kw in node.keywords:
                if kw.arg is None:
                    out.update(self.mapping(kw.value))
                else:
                    out[kw.arg] = self.value(kw.value)
            return out
        if isinstance(node, ast.Name):
            if node.id not in self.names:
                raise self.fail(node, f"name {node.id!r} is not assigned before")
            return copy.deepcopy(self.names[node.id])
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            v = self.value(node.operand)
            return -v if isinstance(node.op, ast.USub) else +v
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            return _BINOPS[type(node.op)](self.value(node.left), self.value(node.right))
        raise self.fail(node, f"unsupported expression {ast.dump(node)[:60]}")

    def mapping(self, node: ast.AST) -> dict:
        v = self.value(node)
        if not isinstance(v, dict):
            raise self.fail(node, "** needs a dict")
        return v

    def parse(self, text: str) -> ast.Module:
        try:
            return ast.parse(text, str(self.path))
        except SyntaxError as e:
            raise ValueError(f"{self.path}:{e.lineno}: not valid Python: {e.msg}") from None

    def read(self) -> dict[str, Any]:
        for stmt in self.parse(self.path.read_text()).body:
            if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
                continue  # a docstring
            if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)):
                raise self.fail(stmt, f"unsupported statement {type(stmt).__name__}")
            self.names[stmt.targets[0].id] = self.value(stmt.value)
        return self.names


def read_assignments(text: str, names: tuple[str, ...], where: str) -> dict[str, Any]:
    """The values of the top-level assignments ``name = <literal>`` of ``names`` in config text (such as the
    ``meta["config"]`` an mmcls checkpoint holds); other statements are not read."""
    reader = _Reader(where)
    return {stmt.targets[0].id: reader.value(stmt.value) for stmt in reader.parse(text).body
            if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)
            and stmt.targets[0].id in names}


def _merge(base: dict, new: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and not v.get("_delete_"):
            out[k] = _merge(out[k], v)
        else:
            out[k] = {a: b for a, b in v.items() if a != "_delete_"} if isinstance(v, dict) else copy.deepcopy(v)
    return out


def read_config(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The config's variables with its ``_base_`` files merged under them."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    if path in _seen:
        raise ValueError(f"config inheritance loop: {' -> '.join(map(str, _seen + (path,)))}")
    own = _Reader(path).read()
    bases = own.pop("_base_", [])
    merged: dict[str, Any] = {}
    for base in [bases] if isinstance(bases, str) else bases:
        merged = _merge(merged, read_config(path.parent / base, _seen + (path,)))
    return _merge(merged, own)


# ------------------------------------------------------------------------------------------ mapping
BACKBONES: dict[tuple[str, str], str] = {  # (backbone type, arch) -> registered onebit model
    ("ResArch", "IRNet-18"): "irnet_r18",
    ("ResArch", "IRNet-34"): "irnet_r34",
    ("ResArch", "BiRealNet-18"): "birealnet18",
    ("ResArch", "BiRealNet-34"): "birealnet34",
    ("ResArch", "ReActNet-18"): "reactnet_r18",
    ("ResArch", "ReActNet-34"): "reactnet_r34",
    ("ResArch", "StrongBaseline"): "strong_baseline",
    ("MobileArch", "ReActNet-A"): "reactnet_a",
}
# Keys without effect on the trained network or its numbers: logging, checkpointing, process setup.
BOOKKEEPING = {"log_config", "log_level", "dist_params", "checkpoint_config", "evaluation", "find_unused_parameters",
               "work_dir", "resume_from", "workflow", "dataset_type", "img_norm_cfg", "train_pipeline",
               "test_pipeline", "imagenet_path", "custom_imports", "optimizer_config"}
IMAGENET_NORM = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)
PIPELINE_TYPES = {"LoadImageFromFile", "RandomResizedCrop", "RandomFlip", "Normalize", "ImageToTensor", "ToTensor",
                  "Collect", "Resize", "CenterCrop"}


class _Keys:
    """Takes keys out of a config dict; whatever is left at the end is an error."""

    def __init__(self, where: str, d: dict):
        self.where, self.d = where, dict(d)

    def take(self, key: str, default: Any = None) -> Any:
        return self.d.pop(key, default)

    def expect(self, key: str, allowed, default: Any = None) -> Any:
        value = self.d.pop(key, default)
        if value not in allowed:
            raise ValueError(f"{self.where}.{key} = {value!r}: onebit implements {' or '.join(map(repr, allowed))}")
        return value

    def done(self) -> None:
        if self.d:
            key = next(iter(self.d))
            raise ValueError(f"{self.where}.{key} = {self.d[key]!r}: onebit has no such setting")


def network_flags(model: dict) -> dict[str, Any]:
    """The flags ``model``, ``a32``, ``w32``, ``model_kwargs`` of an mmcls ``model`` dict's backbone and neck
    (its head, loss and distillation are not read)."""
    flags: dict[str, Any] = {}
    _network(_Keys("model", model), flags)
    return flags


def _model(cfg: dict, flags: dict, base_dir: Path) -> None:
    model = _Keys("model", cfg)
    kind = model.expect("type", ("ImageClassifier", "DistillingImageClassifier"))
    _network(model, flags)
    head = _Keys("model.head", model.take("head") or {})
    head.expect("type", ("LinearClsHead",))
    head.expect("num_classes", (1000,))  # ImageNet's: onebit sizes the head from --dataset
    head.take("in_channels")
    head.take("topk")  # what is logged: onebit logs top-1 and top-5
    loss = _Keys("model.head.loss", head.take("loss") or {"type": "CrossEntropyLoss"})
    loss_type = loss.expect("type", ("CrossEntropyLoss", "LabelSmoothLoss"))
    loss.expect("loss_weight", (1, 1.0), 1.0)
    if loss_type == "LabelSmoothLoss":
        flags["labelsmooth"] = loss.take("label_smooth_val")
        loss.expect("mode", ("original",), "original")
    loss.done()
    head.done()
    distill = model.take("distill")
    if distill is not None:
        if kind != "DistillingImageClassifier":
            raise ValueError(f"model.distill needs type='DistillingImageClassifier', not {kind!r}")
        d = _Keys("model.distill", distill)
        flags["teacher"] = _teacher(d.take("teacher_cfg"), base_dir)
        flags["teacher_ckpt"] = d.take("teacher_ckpt")
        d.expect("only_kdloss", (True,), True)  # ReActNet's distributional loss alone
        d.expect("loss_weight", (1, 1.0), 1.0)
        d.done()
        flags["distill"] = "distributional"
    elif kind == "DistillingImageClassifier":
        raise ValueError("model.type 'DistillingImageClassifier' needs model.distill")
    model.done()


def _network(model: _Keys, flags: dict) -> None:
    """Backbone and neck of ``model`` into ``flags`` (see :func:`network_flags`)."""
    backbone = _Keys("model.backbone", model.take("backbone") or {})
    key = (backbone.take("type"), backbone.take("arch"))
    if key not in BACKBONES:
        raise ValueError(f"model.backbone {key[0]} arch {key[1]!r} has no onebit model"
                         f"{suggest(str(key[1]), [a for _, a in BACKBONES])}")
    flags["model"] = BACKBONES[key]
    kwargs: dict[str, Any] = {}
    act, weights = backbone.take("binary_type", (True, True))
    flags["a32"], flags["w32"] = not act, not weights
    backbone.expect("style", ("pytorch",), "pytorch")
    if key[0] == "ResArch":
        backbone.expect("num_stages", (4,), 4)
        backbone.expect("out_indices", ((3,), [3]), (3,))
        kwargs["downsample"] = "avgpool_conv" if backbone.take("avg_down", False) else "conv"
        kwargs["stem_act"] = backbone.take("stem_act") or "none"
    else:
        stem_act = backbone.take("stem_act")
        if stem_act:
            kwargs["stem_act"] = stem_act
    backbone.done()
    neck = _Keys("model.neck", model.take("neck") or {})
    neck_type = neck.expect("type", ("GlobalAveragePooling", "GlobalAveragePoolingBN"))
    neck.take("in_channels")
    neck.done()
    if key[0] == "ResArch":
        kwargs["head_bn"] = neck_type == "GlobalAveragePoolingBN"
    elif neck_type != "GlobalAveragePooling":
        raise ValueError(f"model.neck.type = {neck_type!r}: onebit's {flags['model']} has no BN before its classifier")
    flags["model_kwargs"] = kwargs


def _teacher(teacher_cfg: str, base_dir: Path) -> str:
    """The teacher of a distillation: mmcls ResNet configs are torchvision's ResNets."""
    name = Path(teacher_cfg).stem
    if name in ("resnet18", "resnet34", "resnet50", "resnet101"):
        return f"torchvision:{name}"
    raise ValueError(f"model.distill.teacher_cfg = {teacher_cfg!r}: onebit takes torchvision ResNets as teachers")


def _optimizer(cfg: dict, flags: dict) -> None:
    opt = _Keys("optimizer", cfg)
    kind = opt.expect("type", ("SGD", "Adam"))
    flags["optimizer"] = kind.lower()
    flags["lr"] = opt.take("lr")
    flags["weight_decay"] = opt.take("weight_decay", 0.0)
    if kind == "SGD":
        flags["momentum"] = opt.take("momentum", 0.0)
        flags["nesterov"] = bool(opt.take("nesterov", False))
    else:
        opt.expect("betas", ((0.9, 0.999), [0.9, 0.999]), (0.9, 0.999))
    paramwise = _Keys("optimizer.paramwise_cfg", opt.take("paramwise_cfg") or {})
    norm_mult = paramwise.expect("norm_decay_mult", (0, 0.0, 1, 1.0, None), None)
    flags["weight_decay_scope"] = "no_bn" if norm_mult == 0 else "all"
    paramwise.done()
    opt.done()


def _schedule(cfg: dict, flags: dict) -> None:
    lr = _Keys("lr_config", cfg)
    policy = lr.expect("policy", ("step", "poly", "CosineAnnealing"))
    by_epoch = lr.take("by_epoch", True)
    if policy == "step":
        step = lr.take("step")
        flags["lr_type"], flags["lr_decay_step"] = "step", [step] if isinstance(step, int) else list(step)
        flags["lr_gamma"] = lr.take("gamma", 0.1)
    else:
        lr.expect("min_lr", (0, 0.0), 0)
        if policy == "poly":
            lr.expect("power", (1, 1.0), 1.0)  # (1 - progress) ** 1: onebit's linear decay
        flags["lr_type"] = "linear" if policy == "poly" else "cos"
    flags["lr_per_iter"] = not by_epoch
    warmup = lr.expect("warmup", (None, "linear"), None)
    if warmup:
        flags["warmup_iters"] = lr.take("warmup_iters")
        flags["warmup_ratio"] = lr.take("warmup_ratio", 0.1)
        lr.expect("warmup_by_epoch", (False,), False)
    lr.done()


def to_flags(cfg: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """``onebit train`` flag values for a merged mmcls config (see the module docstring)."""
    cfg = dict(cfg)
    flags: dict[str, Any] = {"dataset": "imagenet"}
    _model(cfg.pop("model", None) or {}, flags, Path(path).parent)
    if "optimizer" in cfg:
        _optimizer(cfg.pop("optimizer"), flags)
    if "lr_config" in cfg:
        _schedule(cfg.pop("lr_config"), flags)
    grad_clip = (cfg.get("optimizer_config") or {}).get("grad_clip")
    if grad_clip is not None:
        raise ValueError(f"optimizer_config.grad_clip = {grad_clip!r}: onebit does not clip gradients")
    runner = _Keys("runner", cfg.pop("runner", None) or {"type": "EpochBasedRunner"})
    runner.expect("type", ("EpochBasedRunner",))
    if "max_epochs" in runner.d:
        flags["epochs"] = runner.take("max_epochs")
    runner.done()
    for hook in cfg.pop("custom_hooks", None) or []:
        h = _Keys("custom_hooks[]", hook)
        h.expect("type", ("EDEHook",))
        epochs = h.take("total_epoch")
        if epochs != flags.get("epochs"):  # the EDE temperature runs over this many epochs
            raise ValueError(f"custom_hooks EDEHook total_epoch = {epochs} differs from runner.max_epochs "
                             f"{flags.get('epochs')}: onebit schedules the temperature over the run")
        h.done()
    data = _Keys("data", cfg.pop("data", None) or {})
    if "samples_per_gpu" in data.d:  # mmcls trains on 8 GPUs: the global batch is 8x
        flags["batch_size"] = 8 * data.take("samples_per_gpu")
    if "workers_per_gpu" in data.d:
        flags["workers"] = data.take("workers_per_gpu")
    for split in ("train", "val", "test"):
        _dataset(data.take(split), f"data.{split}")
    data.done()
    if cfg.get("resume_from") is not None:
        raise ValueError(f"resume_from = {cfg['resume_from']!r}: use onebit train --resume")
    if cfg.get("workflow", [("train", 1)]) not in ([("train", 1)], [["train", 1]]):
        raise ValueError(f"workflow = {cfg['workflow']!r}: onebit trains then evaluates every epoch")
    if "load_from" in cfg and cfg["load_from"] is not None:
        flags["stage1"] = cfg.pop("load_from")
    cfg.pop("load_from", None)
    if "seed" in cfg:
        flags["seed"] = cfg.pop("seed")
    norm = cfg.get("img_norm_cfg")
    if norm is not None and norm != IMAGENET_NORM:
        raise ValueError(f"img_norm_cfg = {norm!r}: onebit's ImageNet normalisation is {IMAGENET_NORM}")
    for key in cfg:
        if key not in BOOKKEEPING:
            raise ValueError(f"{key} = {cfg[key]!r}: onebit has no such setting{suggest(key, BOOKKEEPING)}")
    return flags


def _dataset(split: dict | None, where: str) -> None:
    if split is None:
        return
    d = _Keys(where, split)
    d.expect("type", ("ImageNet",))
    d.take("data_prefix")  # the data location is --data_path
    d.take("ann_file")
    for step in d.take("pipeline") or []:
        if step.get("type") not in PIPELINE_TYPES:
            raise ValueError(f"{where}.pipeline: transform {step.get('type')!r} is not onebit's ImageNet pipeline")
    d.done()


def load_mmcls_config(path: str | Path) -> dict[str, Any]:
    """The flag values of an mmcls ``.py`` config (``onebit train --config``, ``onebit summary --config``)."""
    return to_flags(read_config(path), path)
