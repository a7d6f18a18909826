"""VGG-small (Zhang et al., LQ-Net 2018) as binarized by IR-Net and RBNN.

Full-precision conv0 (3 -> 128) -> BN -> hardtanh, then five binary 3x3 convs
128-128(pool)-256-256(pool)-512-512(pool), each followed by BN -> hardtanh (max-pool
*before* BN), then a full-precision Linear(512 * (s/8)^2, classes) with no BN/dropout.
Init: convs N(0, sqrt(2 / (k^2 * out))), BN gamma 1, Linear N(0, 0.01), bias 0 (``fan_out``).
"""
from __future__ import annotations

import torch
from torch import nn

from onebit.models.common import BinaryLayers
from onebit.models.registry import register_model
from onebit.models.weight_init import init_weights


class VGGSmall(nn.Module):
    def __init__(self, layers: BinaryLayers, num_classes: int, in_channels: int, image_size: int):
        super().__init__()
        if image_size % 8:
            raise ValueError(f"vgg_small needs an image side divisible by 8, got {image_size}")
        self.conv0 = nn.Conv2d(in_channels, 128, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(128)
        body = []
        for i, (cin, cout, pool) in enumerate(
            [(128, 128, True), (128, 256, False), (256, 256, True), (256, 512, False), (512, 512, True)]
        ):
            body += [layers.conv(cin, cout, 3, 1, 1)]
            body += [nn.MaxPool2d(2)] if pool else []
            body += [nn.BatchNorm2d(cout), nn.Hardtanh(inplace=True)]
        self.features = nn.Sequential(nn.Hardtanh(inplace=True), *body)
        self.fc = nn.Linear(512 * (image_size // 8) ** 2, num_classes)
        init_weights(self, "fan_out", classifier=self.fc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(self.bn0(self.conv0(x)))
        return self.fc(x.flatten(1))


@register_model("vgg_small_1w1a", default_method="rbnn", input_size=32,
                source="IR-Net / RBNN vgg.py (VGG-small of LQ-Net)")
def vgg_small_1w1a(num_classes, in_channels, image_size, layers):
    return VGGSmall(layers, num_classes, in_channels, image_size)
