"""Binary ResNets with one shortcut per binary convolution, configurable like mmcls ``ResArch``.

One backbone covers the ResNet-family definitions of the seeds (RBNN, IR-Net, Bi-Real,
ReActNet, Real-to-Binary, Training-Tricks, mmcls ResArch); they differ
only in how each binary 3x3 convolution is wrapped (a :class:`BlockStyle`), the stem, the
downsampling shortcut, the head and the initialisation:

=================  ===================  =================  ==========  ==============
style              before the sign      after the conv     activation  order
=================  ===================  =================  ==========  ==============
irnet              -                    BN                 hardtanh    act(y + s)
bireal             -                    BN                 -           y + s
reactnet           learnable shift      BN                 RPReLU      act(y + s)
strong_baseline    BN                   XNOR++ scale       PReLU       act(y) + s
real2binary        BN                   channel gate       PReLU       act(y) + s
tricks             BN                   -                  PReLU       act(y + s)
=================  ===================  =================  ==========  ==============

A basic block holds two such units (so "-18" means 16 binary convolutions). With
``double_skip=True`` (Bi-Real, every seed's default) each unit has its own shortcut; with
``double_skip=False`` the block is He et al.'s: ``unit2(unit1(x)) + shortcut(x)``.

Keyword options of every builder below (``create_model(name, stem_act=..., ...)``):

* ``style``: a name of the table above (or a :class:`BlockStyle`), e.g. the Tricks block on
  any ResNet;
* ``stem_act``: ``"none" | "hardtanh" | "relu" | "prelu"`` after the stem BN;
* ``downsample``: the real-valued shortcut of a block that changes shape:
  ``"conv"`` strided 1x1 conv -> BN (mmcls ``avg_down=False``, RBNN/IR-Net);
  ``"avgpool_conv"`` AvgPool(2) -> 1x1 conv -> BN (Bi-Real, ReActNet, larq R2B; Tricks v2);
  ``"conv_avgpool"`` 1x1 conv -> BN -> AvgPool(2) (Tricks v1, "recommended");
  ``"conv_avgpool3"`` 1x1 conv -> BN -> AvgPool(3, s2, p1) (Tricks v3);
  ``"A"`` parameter-free subsample + zero channels (CIFAR ResNet-20);
* ``double_skip`` (bool), ``act_before_add`` (bool: ``act(y) + s`` instead of ``act(y + s)``),
  ``head_bn`` (BatchNorm1d before the classifier, IR-Net/RBNN), ``init`` (see
  :mod:`onebit.models.weight_init`).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, replace

import torch
from torch import nn

from onebit.layers.activations import ChannelGate, LearnableBias, activation
from onebit.quant.scale import LearnedScale
from onebit.models.common import BinaryLayers, ShortcutA
from onebit.models.registry import BUILDER_ARGUMENTS, register_model
from onebit.models.weight_init import init_weights

__all__ = ["BlockStyle", "STYLES", "BinaryConvUnit", "BasicBlock", "ResArch", "DOWNSAMPLES", "rbnn_imagenet_resnet",
           "resarch_options"]


@dataclass(frozen=True)
class BlockStyle:
    """How one binary convolution is wrapped (the table in the module docstring)."""

    pre: str
    """Before the conv (i.e. before its sign): ``"none" | "shift" | "bn"``."""
    post: str
    """After the conv: ``"bn" | "scale" | "gate" | "none"``."""
    act: str
    """The activation, applied with the shortcut: a name of :func:`activation`."""
    act_before_add: bool = False
    """``act(y) + s`` (Real-to-Binary) instead of ``act(y + s)``."""


STYLES = {
    "irnet": BlockStyle("none", "bn", "hardtanh"),
    "bireal": BlockStyle("none", "bn", "none"),
    "reactnet": BlockStyle("shift", "bn", "rprelu"),
    "strong_baseline": BlockStyle("bn", "scale", "prelu", act_before_add=True),
    "real2binary": BlockStyle("bn", "gate", "prelu", act_before_add=True),
    "tricks": BlockStyle("bn", "none", "prelu"),
}

DOWNSAMPLES = ("conv", "avgpool_conv", "conv_avgpool", "conv_avgpool3", "A")


def _choice(kind: str, value: str, choices) -> str:
    if value not in choices:
        raise ValueError(f"unknown {kind} {value!r} (choose from: {', '.join(choices)})")
    return value


def _halved(size: int) -> int:
    """Output side of a stride-2 3x3 convolution with padding 1 (or 7x7 with padding 3)."""
    return (size - 1) // 2 + 1


class BinaryConvUnit(nn.Module):
    """``pre -> binary conv3x3 -> post``, then the activation combined with a shortcut."""

    def __init__(self, style: BlockStyle, layers: BinaryLayers, cin: int, cout: int, stride: int, out_size: int):
        super().__init__()
        _choice("pre", style.pre, ("none", "shift", "bn"))
        _choice("post", style.post, ("bn", "scale", "gate", "none"))
        self.pre: nn.Module = nn.Identity()
        if style.pre == "shift":
            self.pre = LearnableBias(cin)
        elif style.pre == "bn":
            self.pre = nn.BatchNorm2d(cin)
        self.conv = layers.conv(cin, cout, 3, stride, 1)
        self.post: nn.Module = nn.Identity()
        if style.post == "bn":
            self.post = nn.BatchNorm2d(cout)
        elif style.post == "scale":
            self.post = LearnedScale(channels=cout, size=(out_size, out_size))
        elif style.post == "gate":
            self.post = ChannelGate(cin, cout)
        self.act = activation(style.act, cout)
        self.act_before_add = style.act_before_add

    def forward(self, x: torch.Tensor, shortcut: torch.Tensor | None) -> torch.Tensor:
        a = self.pre(x)
        y = self.conv(a)
        y = self.post(y, a) if isinstance(self.post, ChannelGate) else self.post(y)
        if shortcut is None:
            return self.act(y)
        return self.act(y) + shortcut if self.act_before_add else self.act(y + shortcut)


def make_downsample(kind: str, cin: int, cout: int, stride: int) -> nn.Module:
    """The real-valued shortcut of a block from ``cin`` to ``cout`` channels at ``stride``."""
    _choice("downsample", kind, DOWNSAMPLES)
    if kind == "A":
        if stride != 2 or cout < cin:
            raise ValueError("downsample 'A' needs stride 2 and more output than input channels")
        return ShortcutA((cout - cin) // 2)
    conv_stride = stride if kind == "conv" else 1
    conv_bn = [nn.Conv2d(cin, cout, 1, conv_stride, bias=False), nn.BatchNorm2d(cout)]
    if stride == 1 or kind == "conv":
        return nn.Sequential(*conv_bn)
    if kind == "avgpool_conv":  # mmcls avg_down: ceil_mode keeps odd sides consistent with the strided conv
        return nn.Sequential(nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False), *conv_bn)
    if kind == "conv_avgpool":
        return nn.Sequential(*conv_bn, nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False))
    return nn.Sequential(*conv_bn, nn.AvgPool2d(3, stride, 1))


class BasicBlock(nn.Module):
    """Two binary units; see ``double_skip`` in the module docstring."""

    def __init__(self, style, layers, cin, cout, stride, out_size, downsample: str, double_skip: bool):
        super().__init__()
        self.unit1 = BinaryConvUnit(style, layers, cin, cout, stride, out_size)
        self.unit2 = BinaryConvUnit(style, layers, cout, cout, 1, out_size)
        self.shortcut = make_downsample(downsample, cin, cout, stride) if stride != 1 or cin != cout else nn.Identity()
        self.double_skip = double_skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.shortcut(x)
        if self.double_skip:
            out = self.unit1(x, s)
            return self.unit2(out, out)
        return self.unit2(self.unit1(x, None), s)


class ResArch(nn.Module):
    """Stem, ``len(depths)`` stages of :class:`BasicBlock` (``layer1``, ``layer2``... as in
    torchvision, so attention transfer pairs blocks by name), global pool, [BN1d], FC.

    ``stem="imagenet"``: conv7x7/2 -> BN -> act -> maxpool3/2; ``stem="cifar"``: conv3x3 -> BN
    -> act. The first stage keeps the resolution, the others halve it.
    """

    def __init__(
        self,
        layers: BinaryLayers,
        *,
        num_classes: int,
        in_channels: int,
        image_size: int,
        style: str | BlockStyle,
        depths,
        widths=(64, 128, 256, 512),
        stem: str = "imagenet",
        stem_act: str = "none",
        downsample: str = "conv",
        double_skip: bool = True,
        act_before_add: bool | None = None,
        head_bn: bool = False,
        init: str = "fan_out",
    ):
        super().__init__()
        style = STYLES[_choice("block style", style, STYLES)] if isinstance(style, str) else style
        if act_before_add is not None:
            style = replace(style, act_before_add=act_before_add)
        if len(depths) != len(widths):
            raise ValueError(f"depths {tuple(depths)} and widths {tuple(widths)} need the same length")
        _choice("stem", stem, ("imagenet", "cifar"))
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_channels, widths[0], 7, 2, 3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(3, 2, 1)
            size = _halved(_halved(image_size))
        else:
            self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
            self.maxpool = nn.Identity()
            size = image_size
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.stem_act = activation(stem_act, widths[0])
        cin = widths[0]
        for i, (depth, width) in enumerate(zip(depths, widths)):
            blocks = []
            for j in range(depth):
                stride = 2 if i > 0 and j == 0 else 1
                size = _halved(size) if stride == 2 else size
                blocks.append(BasicBlock(style, layers, cin, width, stride, size, downsample, double_skip))
                cin = width
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        self.num_stages = len(depths)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head_bn = nn.BatchNorm1d(cin) if head_bn else nn.Identity()
        self.fc = nn.Linear(cin, num_classes)
        init_weights(self, init, classifier=self.fc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.stem_act(self.bn1(self.conv1(x))))
        for i in range(self.num_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.fc(self.head_bn(self.pool(x).flatten(1)))


def resarch_options(defaults: dict, *extra: inspect.Parameter, fixed: tuple[str, ...] = ()):
    """Decorator giving a builder ``fn(num_classes, in_channels, image_size, layers, **options)`` that
    hands ``options`` to :class:`ResArch` the explicit signature of those options (with the builder's
    ``defaults``, without the ``fixed`` ones), so that ``create_model`` can name an unknown option."""
    keyword = inspect.Parameter.KEYWORD_ONLY
    resarch = [p for n, p in inspect.signature(ResArch.__init__).parameters.items()
               if n not in ("self", *BUILDER_ARGUMENTS, *fixed)]

    def wrap(fn):
        standard = [inspect.Parameter(a, inspect.Parameter.POSITIONAL_OR_KEYWORD) for a in BUILDER_ARGUMENTS]
        options = [p.replace(kind=keyword, default=defaults.get(p.name, p.default)) for p in resarch]
        fn.__signature__ = inspect.Signature(standard + list(extra) + options)
        return fn

    return wrap


def _register(name: str, *, default_method: str, source: str, input_size: int = 224, **defaults):
    """Register ``name`` as a :class:`ResArch` with ``defaults``; builder kwargs override them."""

    @register_model(name, default_method=default_method, source=source, input_size=input_size)
    @resarch_options(defaults)
    def build(num_classes, in_channels, image_size, layers, **options):
        return ResArch(layers, num_classes=num_classes, in_channels=in_channels, image_size=image_size,
                       **{**defaults, **options})

    build.__name__ = name
    return build


# RBNN / IR-Net ImageNet ResNets ----------------------------------------------------------------------
RBNN_IMAGENET = dict(style="irnet", stem_act="hardtanh", downsample="conv", head_bn=True, init="rbnn_imagenet")


def rbnn_imagenet_resnet(depths, layers, num_classes, in_channels, image_size, **options) -> ResArch:
    """RBNN's ``models_imagenet`` ResNet (IR-Net's ImageNet file with RBNN's init): 7x7 stem ->
    BN -> hardtanh -> maxpool, Bi-Real blocks with hardtanh, real strided 1x1 downsample,
    pool -> BN1d -> FC. RBNN's main.py uses it for ImageNet and TinyImageNet. Its fixed
    AvgPool2d(7) is a global pool here, so 64x64 inputs work too."""
    return ResArch(layers, num_classes=num_classes, in_channels=in_channels, image_size=image_size,
                   depths=depths, **{**RBNN_IMAGENET, **options})


@register_model("resnet34_1w1a", default_method="rbnn", input_size=224,
                source="RBNN models_imagenet/resnet.py (IR-Net ImageNet ResNet-34, Bi-Real block)")
@resarch_options(RBNN_IMAGENET, fixed=("depths",))
def resnet34_1w1a(num_classes, in_channels, image_size, layers, **options):
    return rbnn_imagenet_resnet((3, 4, 6, 3), layers, num_classes, in_channels, image_size, **options)


_register("resnet20_bireal_1w1a", default_method="rbnn", input_size=32,
          source="RBNN models_cifar/resnet_bireal.py (ResNet-20, one shortcut per binary conv)",
          style="irnet", depths=(3, 3, 3), widths=(16, 32, 64), stem="cifar", stem_act="hardtanh",
          downsample="A", head_bn=True, init="rbnn_cifar")

# mmcls ResArch of lucifer443/BinaryNeuralNetwork (seed 002) -------------------------------------------
_register("irnet_r18", default_method="irnet", source="mmcls ResArch IRNet-18 (configs/baseline/irnet_r18.py)",
          style="irnet", depths=(2, 2, 2, 2), stem_act="hardtanh", downsample="conv", head_bn=True)
_register("irnet_r34", default_method="irnet", source="mmcls ResArch IRNet-34",
          style="irnet", depths=(3, 4, 6, 3), stem_act="hardtanh", downsample="conv", head_bn=True)
_register("birealnet18", default_method="bireal", source="Bi-Real Net-18 (Liu et al. 2018; mmcls BiRealNet-18)",
          style="bireal", depths=(2, 2, 2, 2), downsample="avgpool_conv")
_register("birealnet34", default_method="bireal", source="Bi-Real Net-34 (Liu et al. 2018; mmcls BiRealNet-34)",
          style="bireal", depths=(3, 4, 6, 3), downsample="avgpool_conv")
_register("reactnet_r18", default_method="reactnet", source="ReActNet ResNet-18 (Liu et al. 2020; mmcls ReActNet-18)",
          style="reactnet", depths=(2, 2, 2, 2), downsample="avgpool_conv")
_register("reactnet_r34", default_method="reactnet", source="mmcls ResArch ReActNet-34",
          style="reactnet", depths=(3, 4, 6, 3), downsample="avgpool_conv")


# Real-to-Binary strong baseline --------------------------------------------------------------
_STRONG_BASELINE = dict(style="strong_baseline", depths=(2, 2, 2, 2), stem_act="prelu", downsample="avgpool_conv")


@register_model("strong_baseline", default_method="bnn", input_size=224,
                source="Real-to-Binary strong baseline ResNet-18 (Martinez et al. 2020; larq zoo, mmcls)")
@resarch_options(_STRONG_BASELINE, inspect.Parameter("gate", inspect.Parameter.KEYWORD_ONLY, default=False))
def strong_baseline(num_classes, in_channels, image_size, layers, gate: bool = False, **options):
    """``gate=True`` replaces the XNOR++ scale by the data-driven channel gate (the full
    Real-to-Binary block). The downsample is larq's AvgPool -> 1x1 -> BN; mmcls's
    configs use ``downsample="conv"``."""
    defaults = {**_STRONG_BASELINE, "style": "real2binary" if gate else "strong_baseline"}
    return ResArch(layers, num_classes=num_classes, in_channels=in_channels, image_size=image_size,
                   **{**defaults, **options})


# Training-Tricks-for-BNNs (seed 004) --------------------------------------------------------------------
_register("resnet18_tricks", default_method="bnn", source="Training-Tricks-for-BNNs ResNet-18 (items 1-4)",
          style="tricks", depths=(2, 2, 2, 2), stem_act="prelu", downsample="conv_avgpool")
