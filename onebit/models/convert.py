"""Checkpoints of the seeds' official code, converted to onebit's model state dicts.

Sources (``SOURCES``) and what they write:

* ``rbnn`` (lmbxmu/RBNN ``main.py``, ``checkpoint.pth.tar``/``model_best.pth.tar``):
  ``{"epoch", "model": <arch name>, "state_dict", "best_prec1", "parameters"}``; a binary
  conv holds ``weight``, ``alpha`` (C, 1, 1), ``rotate`` (C, 1, 1, 1: onebit's ``theta``),
  ``R1``, ``R2``; ``linear`` is the classifier, ``bn2`` the BatchNorm1d before it.
* ``irnet`` (htqin/IR-Net ``trainer.py``, ``checkpoint.th``/``model.th``): ``{"state_dict",
  "best_prec1"[, "epoch"]}`` of a ``DataParallel`` model (``module.`` prefix); binary convs
  hold only ``weight``.
* ``reactnet`` (liuzechun/ReActNet ``train.py``): ``{"epoch", "state_dict", "best_top1_acc",
  "optimizer"}``, ``module.`` prefix; MobileNet blocks ``feature.<i>`` with learnable biases
  ``move11..move23`` (1, C, 1, 1), step-2 binary convs store ``weights`` flat (n, 1).
* ``mmcls`` (seed 002, lucifer443/BinaryNeuralNetwork): ``{"meta", "state_dict"}`` with
  ``backbone.``, ``neck.`` and ``head.`` prefixes.

:func:`convert_state` renames every tensor to the onebit model's key (reshaping quantizer
parameters whose layout differs, e.g. RBNN's ``alpha``) and is strict: a source tensor
without a target, or a target without a source, is an error that lists them. The top-1
of a converted network equals the official evaluation only with the official preprocessing:
:data:`PREPROCESSING` records it per source and data set (RBNN and IR-Net normalise CIFAR
with ImageNet statistics).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

__all__ = ["SOURCES", "ConversionError", "Converted", "detect_source", "convert_state", "to_checkpoint", "PREPROCESSING"]

SOURCES = ("rbnn", "irnet", "reactnet", "mmcls")

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
PREPROCESSING: dict[tuple[str, str], dict[str, Any]] = {
    # (source, dataset): the test-time normalisation of the official code (after ToTensor, 0..1)
    ("rbnn", "cifar10"): dict(mean=IMAGENET_MEAN, std=IMAGENET_STD, origin="RBNN cifar/dataset/dataset.py"),
    ("rbnn", "cifar100"): dict(mean=(0.507, 0.487, 0.441), std=(0.267, 0.256, 0.276),
                               origin="RBNN cifar/dataset/dataset.py"),
    ("irnet", "cifar10"): dict(mean=IMAGENET_MEAN, std=IMAGENET_STD, origin="IR-Net CIFAR-10 trainer.py"),
    ("reactnet", "imagenet"): dict(mean=IMAGENET_MEAN, std=IMAGENET_STD, resize=256, crop=224,
                                   origin="ReActNet train.py"),
    ("mmcls", "imagenet"): dict(mean=IMAGENET_MEAN, std=IMAGENET_STD, resize=256, crop=224,
                                origin="mmcls img_norm_cfg (mean 123.675.. / std 58.395.. on 0..255)"),
}
DATASET_OF_CLASSES = {10: "cifar10", 100: "cifar100", 200: "tinyimagenet", 1000: "imagenet"}


class ConversionError(ValueError):
    """An official checkpoint that cannot be converted (unknown layout, other architecture)."""


@dataclass
class Converted:
    """An official checkpoint in onebit's terms."""

    model_name: str
    method: str
    state_dict: dict[str, torch.Tensor]
    dataset: str
    source: str
    model_options: dict[str, Any] = field(default_factory=dict)
    """Flags of ``onebit train`` that define the network (``w32`` for a step-1 checkpoint...)."""
    info: dict[str, Any] = field(default_factory=dict)
    """What the file says about itself (epoch, best top-1 it recorded)."""

    @property
    def preprocessing(self) -> dict[str, Any] | None:
        return PREPROCESSING.get((self.source, self.dataset))


def unwrap(obj: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(state_dict, other entries)`` of a loaded official file (a dict with ``state_dict``,
    or a bare state dict), ``module.`` prefixes removed."""
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        state, rest = obj["state_dict"], {k: v for k, v in obj.items() if k != "state_dict"}
    elif isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state, rest = obj, {}
    else:
        raise ConversionError("holds no state_dict")
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConversionError("its state_dict holds entries that are not tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}, rest


def detect_source(obj: Any) -> str | None:
    """The source format of a loaded file, or ``None`` when it is none of :data:`SOURCES`."""
    try:
        state, rest = unwrap(obj)
    except ConversionError:
        return None
    keys = list(state)
    if any(k.startswith(("backbone.", "head.")) for k in keys):
        return "mmcls"
    if any(k.endswith((".rotate", ".R1")) for k in keys):
        return "rbnn"
    if any(re.search(r"\.move\d\d\.bias$", k) for k in keys):
        return "reactnet"
    if "best_prec1" in rest and any(re.match(r"layer\d+\.\d+\.conv1\.weight$", k) for k in keys):
        return "irnet"
    return None


# ---------------------------------------------------------------------------------------------- key maps
Rule = tuple[str, str]
"""``(regex, replacement)`` applied with ``re.sub`` to a full key (anchored)."""

RBNN_QUANTIZER: list[Rule] = [
    (r"^(.*\.conv\d|.*\.shortcut\.0)\.rotate$", r"\1.weight_quantizer.theta"),
    (r"^(.*\.conv\d|.*\.shortcut\.0)\.(alpha|R1|R2)$", r"\1.weight_quantizer.\2"),
]
CIFAR_RESNET: list[Rule] = [  # RBNN models_cifar/resnet.py, resnet2.py -> onebit CifarResNet (flat ``layers``)
    (r"^linear\.", "fc."),
]
BIREAL_RESNET: list[Rule] = [  # one shortcut per conv (IR-Net / RBNN resnet_bireal) -> onebit ResArch
    (r"^(layer\d+\.\d+)\.conv(\d)\.", r"\1.unit\2.conv."),
    (r"^(layer\d+\.\d+)\.bn(\d)\.", r"\1.unit\2.post."),
    (r"^(layer\d+\.\d+)\.downsample\.", r"\1.shortcut."),
    (r"^bn2\.", "head_bn."),
    (r"^linear\.", "fc."),
]
REACTNET_A: list[Rule] = [  # ReActNet mobilenet/reactnet.py -> onebit BinaryMobileNet
    (r"^feature\.0\.(conv1|bn1)\.", r"\1."),
    (r"^feature\.(\d+)\.", lambda m: f"features.{int(m.group(1)) - 1}."),
    (r"^(features\.\d+)\.move11\.bias$", r"\1.shift1.bias"),
    (r"^(features\.\d+)\.binary_3x3\.weights?$", r"\1.conv3x3.weight"),
    (r"^(features\.\d+)\.move12\.bias$", r"\1.act1.gamma"),  # prelu(x + b) = RPReLU with gamma = -b
    (r"^(features\.\d+)\.prelu1\.weight$", r"\1.act1.beta"),
    (r"^(features\.\d+)\.move13\.bias$", r"\1.act1.zeta"),
    (r"^(features\.\d+)\.move21\.bias$", r"\1.shift2.bias"),
    (r"^(features\.\d+)\.binary_pw\.weights?$", r"\1.pointwise.0.weight"),
    (r"^(features\.\d+)\.bn2\.", r"\1.bn2.0."),
    (r"^(features\.\d+)\.binary_pw_down(\d)\.weights?$", lambda m: f"{m.group(1)}.pointwise.{int(m.group(2)) - 1}.weight"),
    (r"^(features\.\d+)\.bn2_(\d)\.", lambda m: f"{m.group(1)}.bn2.{int(m.group(2)) - 1}."),
    (r"^(features\.\d+)\.move22\.bias$", r"\1.act2.gamma"),
    (r"^(features\.\d+)\.prelu2\.weight$", r"\1.act2.beta"),
    (r"^(features\.\d+)\.move23\.bias$", r"\1.act2.zeta"),
]


MMCLS_RESARCH: list[Rule] = [  # seed 002 mmcls ResArch + GlobalAveragePooling[BN] + LinearClsHead -> onebit ResArch
    (r"^backbone\.", ""),
    (r"^neck\.bn\.", "head_bn."),
    (r"^head\.fc\.", "fc."),
    (r"^(layer\d+\.\d+)\.conv(\d)\.", r"\1.unit\2.conv."),
    (r"^(layer\d+\.\d+)\.bn(\d)\.", r"\1.unit\2.post."),
    (r"^(layer\d+\.\d+)\.downsample\.", r"\1.shortcut."),
    (r"^(layer\d+\.\d+)\.move(\d)\.bias$", r"\1.unit\2.pre.bias"),
    (r"^(layer\d+\.\d+)\.prelu(\d)\.bias1\.bias$", r"\1.unit\2.act.gamma"),  # prelu(x + b): gamma = -b
    (r"^(layer\d+\.\d+)\.prelu(\d)\.prelu\.weight$", r"\1.unit\2.act.beta"),
    (r"^(layer\d+\.\d+)\.prelu(\d)\.bias2\.bias$", r"\1.unit\2.act.zeta"),
]


def _flatten_blocks(keys) -> Callable[[str], str]:
    """``layer<s>.<b>.`` -> ``layers.<n>.`` numbering the blocks in order (onebit CifarResNet)."""
    blocks = sorted({(int(m.group(1)), int(m.group(2))) for k in keys if (m := re.match(r"layer(\d+)\.(\d+)\.", k))})
    index = {sb: i for i, sb in enumerate(blocks)}

    def rename(key: str) -> str:
        m = re.match(r"layer(\d+)\.(\d+)\.", key)
        return f"layers.{index[int(m.group(1)), int(m.group(2))]}.{key[m.end():]}" if m else key

    return rename


def _apply(rules: list[Rule], key: str) -> str:
    for pattern, repl in rules:
        key = re.sub(pattern, repl, key)
    return key


@dataclass(frozen=True)
class Target:
    """How a source architecture maps onto a registered onebit model."""

    model: str
    method: str
    rules: list[Rule]
    flat_blocks: bool = False
    negate: str | None = None
    """Regex of target keys whose value is the negated source value."""
    zero: str | None = None
    """Regex of target keys the source lacks because its function has no such term (0 = identity)."""


# (source, architecture name of the source) -> target; the architecture comes from the file
# (RBNN stores it) or from its keys (:func:`_architecture`).
TARGETS: dict[tuple[str, str], Target] = {
    ("rbnn", "resnet20_1w1a"): Target("resnet20_1w1a", "rbnn", RBNN_QUANTIZER + CIFAR_RESNET, flat_blocks=True),
    ("rbnn", "resnet18_1w1a"): Target("resnet18_1w1a", "rbnn", RBNN_QUANTIZER + CIFAR_RESNET, flat_blocks=True),
    ("rbnn", "resnet20_bireal_1w1a"): Target("resnet20_bireal_1w1a", "rbnn", RBNN_QUANTIZER + BIREAL_RESNET),
    ("irnet", "resnet20_1w1a"): Target("resnet20_bireal_1w1a", "irnet", BIREAL_RESNET),
    ("mmcls", "IRNet-18"): Target("irnet_r18", "irnet", MMCLS_RESARCH),
    ("mmcls", "IRNet-34"): Target("irnet_r34", "irnet", MMCLS_RESARCH),
    ("mmcls", "BiRealNet-18"): Target("birealnet18", "bireal", MMCLS_RESARCH),
    ("mmcls", "BiRealNet-34"): Target("birealnet34", "bireal", MMCLS_RESARCH),
    ("mmcls", "ReActNet-18"): Target("reactnet_r18", "reactnet", MMCLS_RESARCH, negate=r"\.act\.gamma$",
                                     zero=r"\.input_quantizer\.threshold$"),
    ("mmcls", "ReActNet-34"): Target("reactnet_r34", "reactnet", MMCLS_RESARCH, negate=r"\.act\.gamma$",
                                     zero=r"\.input_quantizer\.threshold$"),
    ("reactnet", "reactnet_a"): Target("reactnet_a", "reactnet", REACTNET_A, negate=r"\.act\d\.gamma$",
                                          zero=r"\.input_quantizer\.threshold$"),  # the shift is move11/move21
}


def _architecture(source: str, state: dict[str, torch.Tensor], rest: dict[str, Any]) -> str:
    if source == "rbnn" and isinstance(rest.get("model"), str):
        return rest["model"]
    if source == "irnet" and "layer3.0.conv1.weight" in state and "layer4.0.conv1.weight" not in state:
        return "resnet20_1w1a"
    if source == "reactnet" and any(k.startswith("feature.") for k in state):
        return "reactnet_a"
    if source == "mmcls":  # the ResArch arch from the keys: blocks per stage, block type, neck
        blocks = {(m.group(1), m.group(2)) for k in state if (m := re.match(r"backbone\.layer(\d)\.(\d+)\.", k))}
        depths = tuple(sum(1 for s, _ in blocks if s == str(i)) for i in range(1, 5))
        depth = {(2, 2, 2, 2): "18", (3, 4, 6, 3): "34"}.get(depths)
        if depth:
            if any(".move1." in k for k in state):
                return f"ReActNet-{depth}"
            return f"IRNet-{depth}" if "neck.bn.weight" in state else f"BiRealNet-{depth}"
    known = sorted(arch for src, arch in TARGETS if src == source)
    raise ConversionError(f"cannot tell which {source} architecture it holds (supported: {', '.join(known)})")


def _fits(src: torch.Tensor, dst: torch.Tensor) -> bool:
    """Same values in another layout: equal shapes up to size-1 dimensions, or ReActNet's flat
    ``(n, 1)`` binary-conv weights."""
    if src.shape == dst.shape:
        return True
    if src.numel() != dst.numel():
        return False
    squeeze = lambda s: [d for d in s if d != 1]  # noqa: E731
    return squeeze(src.shape) == squeeze(dst.shape) or (src.dim() == 2 and src.shape[1] == 1)


def convert_state(obj: Any, source: str | None = None, model: str | None = None) -> Converted:
    """Convert a loaded official checkpoint (see the module docstring). ``source`` defaults to
    :func:`detect_source`; ``model`` overrides the onebit model the file is mapped onto."""
    from onebit.models.registry import create_model, get_entry

    detected = detect_source(obj)
    source = source or detected
    if source is None:
        raise ConversionError(f"is not a checkpoint of {', '.join(SOURCES)} (give --from if it is)")
    if source not in SOURCES:
        raise ConversionError(f"unknown source {source!r} (choose from: {', '.join(SOURCES)})")
    state, rest = unwrap(obj)
    arch = _architecture(source, state, rest)
    target = TARGETS.get((source, arch))
    if target is None:
        raise ConversionError(f"{source} architecture {arch!r} has no onebit counterpart "
                              f"(supported: {', '.join(a for s, a in TARGETS if s == source)})")
    model_name = model or target.model
    get_entry(model_name)
    fc = next((v for k, v in state.items() if re.search(r"(^|\.)(fc|linear)\.weight$", k)), None)
    if fc is None:
        raise ConversionError("has no classifier weight (fc/linear) to size the model")
    num_classes = fc.shape[0]
    dataset = DATASET_OF_CLASSES.get(num_classes)
    if dataset is None:
        raise ConversionError(f"has {num_classes} classes: no onebit data set has that many")
    with torch.random.fork_rng(devices=[]):  # building RBNN layers draws random rotations
        net = create_model(model_name, num_classes, method=target.method,
                           image_size=get_entry(model_name).input_size)
    own = net.state_dict()
    rename = _flatten_blocks(state) if target.flat_blocks else (lambda k: k)
    out, unmapped, mismatched = {}, [], []
    for key, value in state.items():
        new = _apply(target.rules, rename(key))
        if new not in own:
            unmapped.append(key)
        elif not _fits(value, own[new]):
            mismatched.append(f"{key} {tuple(value.shape)} vs {new} {tuple(own[new].shape)}")
        else:
            value = value.reshape(own[new].shape).clone()
            out[new] = -value if target.negate and re.search(target.negate, new) else value
    for k in own:
        if k not in out and target.zero and re.search(target.zero, k):
            out[k] = torch.zeros_like(own[k])
    missing = [k for k in own if k not in out and not k.endswith("num_batches_tracked")]
    for k in own:  # checkpoints of PyTorch < 0.4.1 lack the BN counters: they do not change outputs
        if k not in out and k.endswith("num_batches_tracked"):
            out[k] = own[k].clone()
    if unmapped or mismatched or missing:
        parts = [f"{label}: {', '.join(items[:6])}{' ...' if len(items) > 6 else ''}"
                 for label, items in (("not mapped", unmapped), ("shape mismatch", mismatched),
                                      (f"missing for {model_name}", missing)) if items]
        raise ConversionError(f"does not fit onebit model {model_name!r} ({source} layout): " + "; ".join(parts))
    info = {k: rest[k] for k in ("epoch", "best_prec1", "best_top1_acc") if isinstance(rest.get(k), (int, float))}
    # ReActNet step 1 (real weights, binary activations) has nn.Conv2d ``weight`` where step 2 has ``weights``
    options = {"w32": True} if source == "reactnet" and any(k.endswith("binary_3x3.weight") for k in state) else {}
    return Converted(model_name, target.method, out, dataset, source, model_options=options, info=info)


def to_checkpoint(obj: Any, path, source: str | None = None, model: str | None = None) -> dict[str, Any]:
    """The onebit checkpoint dict (``model``, ``model_name``, ``config``, ``imported_from``,
    ``preprocessing``) of a loaded official file; ``path`` names it in errors."""
    from onebit.models.checkpoint import CheckpointError

    try:
        c = convert_state(obj, source, model)
    except ConversionError as e:
        raise CheckpointError(f"{path}: {e}") from None
    checkpoint = {
        "model_name": c.model_name,
        "model": c.state_dict,
        "config": {"model": c.model_name, "method": c.method, "dataset": c.dataset, **c.model_options},
        "imported_from": {"format": c.source, "file": str(path), **c.info},
        "path": str(path),
    }
    if c.preprocessing:
        checkpoint["preprocessing"] = dict(c.preprocessing)
    return checkpoint
