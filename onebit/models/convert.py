"""Checkpoints of the seeds' official code, converted to onebit's model state dicts.

Sources (``SOURCES``) and what they write:

* ``rbnn`` (lmbxmu/RBNN ``main.py``, ``checkpoint.pth.tar``/``model_best.pth.tar``):
  ``{"epoch", "model": <arch name>, "state_dict", "best_prec1", "parameters"}``; a binary
  conv holds ``weight``, ``alpha`` (C, 1, 1), ``rotate`` (C, 1, 1, 1: onebit's ``theta``),
  ``R1``, ``R2``; ``linear`` is the classifier, ``bn2`` the BatchNorm1d before it. CIFAR
  ResNets, ``vgg_small_1w1a`` (``conv1..5``/``bn1..5``), and the ImageNet ResNet-18/34 of
  ``models_imagenet`` (told apart from the CIFAR ``resnet18_1w1a`` by its 7x7 stem; its
  ``bn3`` is built but never used by its forward, and dropped).
* ``irnet`` (htqin/IR-Net ``trainer.py``, ``checkpoint.th``/``model.th``): ``{"state_dict",
  "best_prec1"[, "epoch"]}`` of a ``DataParallel`` model (``module.`` prefix); binary convs
  hold only ``weight``.
* ``reactnet`` (liuzechun/ReActNet ``train.py``): ``{"epoch", "state_dict", "best_top1_acc",
  "optimizer"}``, ``module.`` prefix; MobileNet blocks ``feature.<i>`` with learnable biases
  ``move11..move23`` (1, C, 1, 1), step-2 binary convs store ``weights`` flat (n, 1); or the
  ResNet-18/34 of ``resnet/*/birealnet.py``: one binary conv per block (``move0``,
  ``binary_conv``, ``bn1``, ``move1``, ``prelu``, ``move2``), two of them per onebit block.
  Its step-1 and step-2 files have the same keys: converted as step 2 (``--w32`` for step 1).
* ``mmcls`` (seed 002, lucifer443/BinaryNeuralNetwork): ``{"meta", "state_dict"}`` with
  ``backbone.``, ``neck.`` and ``head.`` prefixes (ResArch IRNet/BiRealNet/ReActNet-18/34,
  StrongBaseline; MobileArch ReActNet-A); ``meta["config"]``, the config text its
  ``tools/train.py`` stores, gives the data set, the normalisation and ``binary_type``.

The official forwards binarise the stored weight with ``torch.sign``, which keeps an exact 0
at 0; onebit's weights are +-1. Such weights are counted in ``info["zero_binary_weights"]``
(the converted network then differs from the official one where they are used).

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

from onebit.layers import BinaryConv2d, BinaryLinear

__all__ = ["SOURCES", "ConversionError", "Converted", "detect_source", "convert_state", "to_checkpoint", "PREPROCESSING"]

SOURCES = ("rbnn", "irnet", "reactnet", "mmcls")

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
PREPROCESSING: dict[tuple[str, str], dict[str, Any]] = {
    # (source, dataset): the test-time normalisation of the official code (after ToTensor, 0..1)
    ("rbnn", "cifar10"): dict(mean=IMAGENET_MEAN, std=IMAGENET_STD, origin="RBNN cifar/dataset/dataset.py"),
    ("rbnn", "cifar100"): dict(mean=(0.507, 0.487, 0.441), std=(0.267, 0.256, 0.276),
                               origin="RBNN cifar/dataset/dataset.py"),
    ("irnet", "cifar10"): dict(mean=IMAGENET_MEAN, std=IMAGENET_STD, origin="IR-Net CIFAR-10 trainer.py"),
    ("rbnn", "imagenet"): dict(mean=IMAGENET_MEAN, std=IMAGENET_STD, resize=256, crop=224,
                               origin="RBNN imagenet/dataset/imagenet.py"),
    ("reactnet", "imagenet"): dict(mean=IMAGENET_MEAN, std=IMAGENET_STD, resize=256, crop=224,
                                   origin="ReActNet train.py"),
    ("mmcls", "imagenet"): dict(mean=IMAGENET_MEAN, std=IMAGENET_STD, resize=256, crop=224,
                                origin="mmcls img_norm_cfg (mean 123.675.. / std 58.395.. on 0..255)"),
}
DATASET_OF_CLASSES = {10: "cifar10", 100: "cifar100", 200: "tinyimagenet", 1000: "imagenet"}
MMCLS_DATASETS = {"ImageNet": "imagenet", "CIFAR10": "cifar10", "CIFAR100": "cifar100"}
SIGN_OF_LATENT = ("reactnet", "bireal", "bnn")
"""Methods whose official binary weight is ``torch.sign`` of the stored weight: an exact 0 stays 0 there."""


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
    preprocessing: dict[str, Any] | None = None
    """The official test-time normalisation (:data:`PREPROCESSING`, or the file's own config)."""


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
    if any(re.search(r"\.move\d+\.bias$", k) for k in keys):
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


RBNN_VGG_SMALL: list[Rule] = [  # RBNN models_cifar/vgg.py VGG_SMALL_1W1A -> onebit VGGSmall (one ``features``)
    (r"^conv([1-5])\.rotate$", r"conv\1.weight_quantizer.theta"),
    (r"^conv([1-5])\.(alpha|R1|R2)$", r"conv\1.weight_quantizer.\2"),
    (r"^conv([1-5])\.", lambda m: f"features.{(1, 5, 8, 12, 15)[int(m.group(1)) - 1]}."),
    (r"^bn([1-5])\.", lambda m: f"features.{(3, 6, 10, 13, 17)[int(m.group(1)) - 1]}."),
]
REACTNET_RESNET: list[Rule] = [  # ReActNet resnet/birealnet.py (one conv per block) -> onebit ResArch units
    (r"^layer(\d)\.(\d+)\.", lambda m: f"layer{m.group(1)}.{int(m.group(2)) // 2}.unit{int(m.group(2)) % 2 + 1}."),
    (r"^(layer\d\.\d+)\.unit1\.downsample\.", r"\1.shortcut."),
    (r"^(layer\d\.\d+\.unit\d)\.move0\.bias$", r"\1.pre.bias"),
    (r"^(layer\d\.\d+\.unit\d)\.binary_conv\.", r"\1.conv."),
    (r"^(layer\d\.\d+\.unit\d)\.bn1\.", r"\1.post."),
    (r"^(layer\d\.\d+\.unit\d)\.move1\.bias$", r"\1.act.gamma"),  # prelu(x + b): gamma = -b
    (r"^(layer\d\.\d+\.unit\d)\.prelu\.weight$", r"\1.act.beta"),
    (r"^(layer\d\.\d+\.unit\d)\.move2\.bias$", r"\1.act.zeta"),
]
MMCLS_STRONG_BASELINE: list[Rule] = [  # seed 002 mmcls ResArch StrongBaseline -> onebit strong_baseline
    (r"^backbone\.", ""),
    (r"^head\.fc\.", "fc."),
    (r"^(layer\d+\.\d+)\.bn(\d)\.", r"\1.unit\2.pre."),
    (r"^(layer\d+\.\d+)\.conv(\d)\.", r"\1.unit\2.conv."),
    (r"^(layer\d+\.\d+)\.scale(\d)\.alpha$", r"\1.unit\2.post.channel"),  # (1, C, 1, 1)
    (r"^(layer\d+\.\d+)\.scale(\d)\.beta$", r"\1.unit\2.post.row"),  # (1, 1, H, 1)
    (r"^(layer\d+\.\d+)\.scale(\d)\.gamma$", r"\1.unit\2.post.column"),  # (1, 1, 1, W)
    (r"^(layer\d+\.\d+)\.nonlinear(\d)\.", r"\1.unit\2.act."),
    (r"^(layer\d+\.\d+)\.downsample\.", r"\1.shortcut."),
]
MMCLS_MOBILEARCH: list[Rule] = [  # seed 002 mmcls MobileArch ReActNet-A (blocks renumbered first) -> BinaryMobileNet
    (r"^backbone\.conv1\.conv\.", "conv1."),
    (r"^backbone\.conv1\.bn\.", "bn1."),
    (r"^backbone\.stem_act\.", "stem_act."),
    (r"^head\.fc\.", "fc."),
    (r"^(features\.\d+)\.move1\.bias$", r"\1.shift1.bias"),
    (r"^(features\.\d+)\.binary_3x3\.", r"\1.conv3x3."),
    (r"^(features\.\d+)\.prelu(\d)\.bias1\.bias$", r"\1.act\2.gamma"),  # prelu(x + b): gamma = -b
    (r"^(features\.\d+)\.prelu(\d)\.prelu\.weight$", r"\1.act\2.beta"),
    (r"^(features\.\d+)\.prelu(\d)\.bias2\.bias$", r"\1.act\2.zeta"),
    (r"^(features\.\d+)\.move2\.bias$", r"\1.shift2.bias"),
    (r"^(features\.\d+)\.binary_pw\.", r"\1.pointwise.0."),
    (r"^(features\.\d+)\.bn2\.", r"\1.bn2.0."),
    (r"^(features\.\d+)\.binary_pw_down(\d)\.", lambda m: f"{m.group(1)}.pointwise.{int(m.group(2)) - 1}."),
    (r"^(features\.\d+)\.bn2_(\d)\.", lambda m: f"{m.group(1)}.bn2.{int(m.group(2)) - 1}."),
]


def _numbered_blocks(pattern: str, prefix: str) -> Callable[[Any], Callable[[str], str]]:
    """A key renamer factory: the blocks ``pattern`` matches (groups: stage, block) become ``<prefix>.<n>.``,
    numbered in (stage, block) order over the file's keys."""

    def renamer(keys) -> Callable[[str], str]:
        blocks = sorted({(int(m.group(1)), int(m.group(2))) for k in keys if (m := re.match(pattern, k))})
        index = {sb: i for i, sb in enumerate(blocks)}

        def rename(key: str) -> str:
            m = re.match(pattern, key)
            return f"{prefix}.{index[int(m.group(1)), int(m.group(2))]}.{key[m.end():]}" if m else key

        return rename

    return renamer


FLAT_LAYERS = _numbered_blocks(r"layer(\d+)\.(\d+)\.", "layers")  # onebit CifarResNet
MOBILE_FEATURES = _numbered_blocks(r"backbone\.layer(\d+)\.(\d+)\.", "features")  # onebit BinaryMobileNet


def _apply(rules: list[Rule], key: str) -> str:
    for pattern, repl in rules:
        key = re.sub(pattern, repl, key)
    return key


@dataclass
class Target:
    """How a source architecture maps onto a registered onebit model."""

    model: str
    method: str
    rules: list[Rule]
    renumber: Callable[[Any], Callable[[str], str]] | None = None
    """Applied before ``rules``: renames blocks by their position among the file's blocks."""
    negate: str | None = None
    """Regex of target keys whose value is the negated source value."""
    zero: str | None = None
    """Regex of target keys the source lacks because its function has no such term (0 = identity)."""
    unused: str | None = None
    """Regex of source keys the official forward never reads (dropped)."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Builder options of the onebit model (``model_kwargs``) that give the source's layout."""


# (source, architecture name of the source) -> target; the architecture comes from the file
# (RBNN stores it) or from its keys (:func:`_architecture`).
RBNN_IMAGENET_UNUSED = r"^bn3\."  # BatchNorm1d(num_classes) built by models_imagenet/resnet.py, not in forward()
TARGETS: dict[tuple[str, str], Target] = {
    ("rbnn", "resnet20_1w1a"): Target("resnet20_1w1a", "rbnn", RBNN_QUANTIZER + CIFAR_RESNET, renumber=FLAT_LAYERS),
    ("rbnn", "resnet18_1w1a"): Target("resnet18_1w1a", "rbnn", RBNN_QUANTIZER + CIFAR_RESNET, renumber=FLAT_LAYERS),
    ("rbnn", "resnet20_bireal_1w1a"): Target("resnet20_bireal_1w1a", "rbnn", RBNN_QUANTIZER + BIREAL_RESNET),
    ("rbnn", "vgg_small_1w1a"): Target("vgg_small_1w1a", "rbnn", RBNN_VGG_SMALL),
    # models_imagenet/resnet.py: IR-Net's ImageNet ResNet (= onebit's irnet_r18 / resnet34_1w1a layout)
    ("rbnn", "imagenet/resnet18_1w1a"): Target("irnet_r18", "rbnn", RBNN_QUANTIZER + BIREAL_RESNET,
                                               unused=RBNN_IMAGENET_UNUSED),
    ("rbnn", "imagenet/resnet34_1w1a"): Target("resnet34_1w1a", "rbnn", RBNN_QUANTIZER + BIREAL_RESNET,
                                               unused=RBNN_IMAGENET_UNUSED),
    ("irnet", "resnet20_1w1a"): Target("resnet20_bireal_1w1a", "irnet", BIREAL_RESNET),
    ("mmcls", "IRNet-18"): Target("irnet_r18", "irnet", MMCLS_RESARCH),
    ("mmcls", "IRNet-34"): Target("irnet_r34", "irnet", MMCLS_RESARCH),
    ("mmcls", "BiRealNet-18"): Target("birealnet18", "bireal", MMCLS_RESARCH),
    ("mmcls", "BiRealNet-34"): Target("birealnet34", "bireal", MMCLS_RESARCH),
    ("mmcls", "ReActNet-18"): Target("reactnet_r18", "reactnet", MMCLS_RESARCH, negate=r"\.act\.gamma$",
                                     zero=r"\.input_quantizer\.threshold$"),
    ("mmcls", "ReActNet-34"): Target("reactnet_r34", "reactnet", MMCLS_RESARCH, negate=r"\.act\.gamma$",
                                     zero=r"\.input_quantizer\.threshold$"),
    ("mmcls", "StrongBaseline"): Target("strong_baseline", "bnn", MMCLS_STRONG_BASELINE,
                                        kwargs={"downsample": "conv"}),  # mmcls avg_down=False
    ("mmcls", "ReActNet-A"): Target("reactnet_a", "reactnet", MMCLS_MOBILEARCH, renumber=MOBILE_FEATURES,
                                    negate=r"\.act\d\.gamma$", zero=r"\.input_quantizer\.threshold$"),
    ("reactnet", "reactnet_a"): Target("reactnet_a", "reactnet", REACTNET_A, negate=r"\.act\d\.gamma$",
                                       zero=r"\.input_quantizer\.threshold$"),  # the shift is move11/move21
    ("reactnet", "birealnet18"): Target("reactnet_r18", "reactnet", REACTNET_RESNET, negate=r"\.act\.gamma$",
                                        zero=r"\.input_quantizer\.threshold$"),
    ("reactnet", "birealnet34"): Target("reactnet_r34", "reactnet", REACTNET_RESNET, negate=r"\.act\.gamma$",
                                        zero=r"\.input_quantizer\.threshold$"),
}


def _blocks_per_stage(state: dict[str, torch.Tensor], prefix: str = "") -> tuple[int, ...]:
    blocks = {(int(m.group(1)), int(m.group(2))) for k in state if (m := re.match(prefix + r"layer(\d)\.(\d+)\.", k))}
    return tuple(sum(1 for s, _ in blocks if s == i) for i in range(1, 1 + max((s for s, _ in blocks), default=0)))


def _architecture(source: str, state: dict[str, torch.Tensor], rest: dict[str, Any]) -> str:
    if source == "rbnn" and isinstance(rest.get("model"), str):
        stem = state.get("conv1.weight")  # models_imagenet and models_cifar both name a resnet18_1w1a
        imagenet = stem is not None and stem.dim() == 4 and stem.shape[-1] == 7
        return f"imagenet/{rest['model']}" if imagenet else rest["model"]
    if source == "irnet" and "layer3.0.conv1.weight" in state and "layer4.0.conv1.weight" not in state:
        return "resnet20_1w1a"
    if source == "reactnet":  # mobilenet/reactnet.py, or resnet/birealnet.py with one conv per block
        if any(k.startswith("feature.") for k in state):
            return "reactnet_a"
        arch = {(4, 4, 4, 4): "birealnet18", (6, 8, 12, 6): "birealnet34"}.get(_blocks_per_stage(state))
        if arch:
            return arch
    if source == "mmcls":
        if "backbone.conv1.conv.weight" in state and any(".binary_3x3." in k for k in state):
            return "ReActNet-A"  # MobileArch
        depth = {(2, 2, 2, 2): "18", (3, 4, 6, 3): "34"}.get(_blocks_per_stage(state, r"backbone\."))
        if depth == "18" and any(".scale1.alpha" in k for k in state):
            return "StrongBaseline"
        if depth:  # the ResArch arch from the keys: blocks per stage, block type, neck
            if any(".move1." in k for k in state):
                return f"ReActNet-{depth}"
            return f"IRNet-{depth}" if "neck.bn.weight" in state else f"BiRealNet-{depth}"
    known = sorted(arch for src, arch in TARGETS if src == source)
    raise ConversionError(f"cannot tell which {source} architecture it holds (supported: {', '.join(known)})")


def _mmcls_meta(rest: dict[str, Any]) -> tuple[str | None, dict[str, Any] | None, dict[str, Any]]:
    """What the config text an mmcls checkpoint holds (``meta["config"]``, written by its ``tools/train.py``)
    says: the data set, its normalisation and onebit's model flags (:func:`network_flags`); ``(None, None, {})``
    for a file without one."""
    from onebit.models.mmcls_config import network_flags, read_assignments

    meta = rest.get("meta")
    text = meta.get("config") if isinstance(meta, dict) else None
    if not isinstance(text, str):
        return None, None, {}
    try:
        values = read_assignments(text, ("dataset_type", "img_norm_cfg", "model"), "meta['config']")
        flags = network_flags(values["model"]) if isinstance(values.get("model"), dict) else {}
    except ValueError as e:
        raise ConversionError(f"its meta['config'] does not fit onebit: {e}") from None
    dataset, norm = MMCLS_DATASETS.get(values.get("dataset_type")), values.get("img_norm_cfg")
    if "dataset_type" in values and dataset is None:
        raise ConversionError(f"was trained on dataset_type {values['dataset_type']!r} "
                              f"(onebit reads {', '.join(MMCLS_DATASETS)})")
    if not isinstance(norm, dict):
        return dataset, None, flags
    if not norm.get("to_rgb", True):
        raise ConversionError("was trained on BGR inputs (img_norm_cfg to_rgb=False): onebit feeds RGB")
    preprocessing = dict(mean=tuple(m / 255 for m in norm["mean"]), std=tuple(v / 255 for v in norm["std"]),
                         origin="its meta['config'] img_norm_cfg (on 0..255)")
    if dataset == "imagenet":
        preprocessing.update(resize=256, crop=224)
    return dataset, preprocessing, flags


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
    dataset, preprocessing, flags = _mmcls_meta(rest) if source == "mmcls" else (None, None, {})
    if flags and flags["model"] != target.model:
        raise ConversionError(f"its keys are an mmcls {arch} but its meta['config'] describes {flags['model']}")
    kwargs = {**target.kwargs, **flags.get("model_kwargs", {})}
    # ReActNet-A step 1 (real weights, binary activations) has nn.Conv2d ``weight`` where step 2 has ``weights``
    w32 = flags.get("w32", False) or (source == "reactnet" and any(k.endswith("binary_3x3.weight") for k in state))
    a32 = flags.get("a32", False)
    binary_type = (not a32, not w32)
    model_name = model or target.model
    get_entry(model_name)
    fc = next((v for k, v in state.items() if re.search(r"(^|\.)(fc|linear)\.weight$", k)), None)
    if fc is None:
        raise ConversionError("has no classifier weight (fc/linear) to size the model")
    num_classes = fc.shape[0]
    if source == "reactnet":
        dataset = "imagenet"  # its train.py reads ImageNet folders only (any number of classes)
    dataset = dataset or DATASET_OF_CLASSES.get(num_classes)
    if dataset is None:
        raise ConversionError(f"has {num_classes} classes: no onebit data set has that many")
    with torch.random.fork_rng(devices=[]):  # building RBNN layers draws random rotations
        net = create_model(model_name, num_classes, method=target.method, binary_type=binary_type,
                           image_size=get_entry(model_name).input_size, **kwargs)
    own = net.state_dict()
    rename = target.renumber(state) if target.renumber else (lambda k: k)
    out, unmapped, mismatched = {}, [], []
    for key, value in state.items():
        if target.unused and re.search(target.unused, key):
            continue
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
    recorded = {**rest.get("meta", {}), **rest} if isinstance(rest.get("meta"), dict) else rest  # mmcls: meta.epoch
    info = {k: v for k in ("epoch", "best_prec1", "best_top1_acc") if isinstance(v := recorded.get(k), (int, float))}
    if target.method in SIGN_OF_LATENT and not w32:
        zeros = sum(int((out[f"{name}.weight"] == 0).sum()) for name, m in net.named_modules()
                    if isinstance(m, (BinaryConv2d, BinaryLinear)))
        if zeros:  # torch.sign(0) = 0 in the official forward; onebit's weights are +-1 (0 -> +1)
            info["zero_binary_weights"] = zeros
    options: dict[str, Any] = {k: True for k, on in (("a32", a32), ("w32", w32)) if on}
    if kwargs:
        options["model_kwargs"] = kwargs
    return Converted(model_name, target.method, out, dataset, source, model_options=options, info=info,
                     preprocessing=preprocessing or PREPROCESSING.get((source, dataset)))


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
