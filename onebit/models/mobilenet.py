"""MobileNetV1-derived binary networks with one shortcut per binary convolution.

Two definitions share the block (ReActNet-A, and RBNN's MobileNets that its repository deleted):

* ``reactnet_a``: ReActNet-A (Liu et al. 2020; official ``mobilenet/2_step2/reactnet.py``,
  mmcls ``MobileArch``). ImageNet stem conv3x3/2 -> BN (no activation); every 3x3 conv is a
  *full* binary conv Cin -> Cin; RSign shifts before each sign, RPReLU after each add.
* ``mobilenetv1_bireal_{025,05}[_noGroup]_1w1a``: RBNN's CIFAR MobileNets (deleted from
  its repo in June 2020; seed 000 lists them). Stem conv3x3/1 -> BN -> hardtanh; a binary
  *depthwise* 3x3 (full 3x3 in ``noGroup``), hardtanh after each add, no shifts. The width
  multiplier ``w`` drops the first ``1/w`` entries of the channel list before scaling it, so
  that the first block always goes 32 -> 64 channels at stride 1.

Block (``Cout`` is ``Cin`` or ``2 Cin``)::

    y = act1( BN(conv3x3_{Cin->Cin, stride}(shift1(x))) + AvgPool2(x) if stride 2 else x )
    o = concat_k [ BN_k(conv1x1_k{Cin->Cin}(shift2(y))) + y ]      k = 1 or 2 ("duplicated input")
    return act2(o)
"""
from __future__ import annotations

import torch
from torch import nn

from onebit.layers.activations import LearnableBias, activation
from onebit.models.common import BinaryLayers
from onebit.models.registry import register_model
from onebit.models.weight_init import init_weights

__all__ = ["MobileBlock", "BinaryMobileNet", "MOBILENET_V1_BLOCKS"]

MOBILENET_V1_BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [
    (1024, 2), (1024, 1)]
"""(output channels, stride) of the 13 blocks after the 32-channel stem (MobileNetV1 / ReActNet-A)."""


class MobileBlock(nn.Module):
    """The block of the module docstring; ``rsign`` adds the ReActNet shifts."""

    def __init__(self, layers: BinaryLayers, cin: int, cout: int, stride: int, *,
                 rsign: bool, act: str, depthwise: bool):
        super().__init__()
        if cout not in (cin, 2 * cin):
            raise ValueError(f"a MobileBlock keeps or doubles its channels, not {cin} -> {cout}")
        self.shift1 = LearnableBias(cin) if rsign else nn.Identity()
        self.conv3x3 = layers.conv(cin, cin, 3, stride, 1, groups=cin if depthwise else 1)
        self.bn1 = nn.BatchNorm2d(cin)
        self.pool = nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False) if stride == 2 else nn.Identity()
        self.act1 = activation(act, cin)
        self.shift2 = LearnableBias(cin) if rsign else nn.Identity()
        self.pointwise = nn.ModuleList(layers.conv(cin, cin, 1) for _ in range(cout // cin))
        self.bn2 = nn.ModuleList(nn.BatchNorm2d(cin) for _ in range(cout // cin))
        self.act2 = activation(act, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act1(self.bn1(self.conv3x3(self.shift1(x))) + self.pool(x))
        z = self.shift2(y)
        return self.act2(torch.cat([bn(conv(z)) + y for conv, bn in zip(self.pointwise, self.bn2)], dim=1))


class BinaryMobileNet(nn.Module):
    """Real stem conv3x3 -> BN -> act, :class:`MobileBlock` s, global pool -> real FC."""

    def __init__(self, layers: BinaryLayers, blocks, num_classes: int, in_channels: int, *, stem_stride: int,
                 stem_act: str, rsign: bool, act: str, depthwise: bool, stem_channels: int = 32):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, stem_channels, 3, stem_stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_channels)
        self.stem_act = activation(stem_act, stem_channels)
        body, cin = [], stem_channels
        for cout, stride in blocks:
            body.append(MobileBlock(layers, cin, cout, stride, rsign=rsign, act=act, depthwise=depthwise))
            cin = cout
        self.features = nn.Sequential(*body)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(self.stem_act(self.bn1(self.conv1(x))))
        return self.fc(self.pool(x).flatten(1))


@register_model("reactnet_a", default_method="reactnet", input_size=224,
                source="ReActNet-A (Liu et al. 2020, MobileNetV1-based; mmcls MobileArch)")
def reactnet_a(num_classes, in_channels, image_size, layers, stem_act: str = "none", width_multiplier: float = 1.0):
    """``width_multiplier`` scales every channel count (MobileNet's alpha; 1 is ReActNet-A)."""
    blocks = [(max(1, int(c * width_multiplier)), s) for c, s in MOBILENET_V1_BLOCKS]
    model = BinaryMobileNet(layers, blocks, num_classes, in_channels, stem_stride=2, stem_act=stem_act, rsign=True,
                            act="rprelu", depthwise=False, stem_channels=max(1, int(32 * width_multiplier)))
    return init_weights(model, "fan_out", classifier=model.fc)  # mmcls init_weights


def _rbnn_mobilenet(width: float, depthwise: bool):
    def build(num_classes, in_channels, image_size, layers):
        dropped = int(1 / width) if width != 1 else 0
        blocks = [(int(c * width), s) for c, s in MOBILENET_V1_BLOCKS[dropped:]]
        model = BinaryMobileNet(layers, blocks, num_classes, in_channels, stem_stride=1, stem_act="hardtanh",
                                rsign=False, act="hardtanh", depthwise=depthwise)
        return init_weights(model, "kaiming", classifier=model.fc)

    return build


for _width, _tag in ((0.25, "025"), (0.5, "05")):
    for _depthwise, _group in ((True, ""), (False, "noGroup_")):
        register_model(
            f"mobilenetv1_bireal_{_tag}_{_group}1w1a", default_method="rbnn", input_size=32,
            source=f"RBNN models_bnn/mobilenetv1_bireal_w1{'' if _depthwise else '_noGroup'}.py (deleted 2020-06)",
        )(_rbnn_mobilenet(_width, _depthwise))
