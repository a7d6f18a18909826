"""CIFAR ResNets of RBNN (Lin et al., NeurIPS 2020), as its official code defines them.

* ``resnet20_1w1a``: stem conv3x3 -> BN -> hardtanh (full precision); 3 stages x 3 basic
  blocks (16/32/64 channels); parameter-free option-A shortcuts; global average pool ->
  BatchNorm1d -> Linear. Every BatchNorm2d starts at gamma = 1e-8 (each residual branch
  starts near 0), as in the reference code.
* ``resnet18_1w1a``: stem conv3x3 -> BN (no activation); [2, 2, 2, 2] basic blocks
  (64..512 channels); the 1x1 projection shortcuts are binary too; PyTorch default init.

Basic block: ``out = ht(BN(bconv1(x)))``, ``out = ht(BN(bconv2(out)) + shortcut(x))``.
"""
from __future__ import annotations

import torch
from torch import nn

from onebit.models.common import BinaryLayers, ShortcutA
from onebit.models.resarch import RBNN_IMAGENET, rbnn_imagenet_resnet, resarch_options
from onebit.models.registry import register_model
from onebit.models.weight_init import init_weights


class BasicBlock(nn.Module):
    def __init__(self, layers: BinaryLayers, in_planes: int, planes: int, stride: int, shortcut: str):
        super().__init__()
        self.conv1 = layers.conv(in_planes, planes, 3, stride, 1)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = layers.conv(planes, planes, 3, 1, 1)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act = nn.Hardtanh(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            if shortcut == "A":
                self.shortcut = ShortcutA((planes - in_planes) // 2)
            else:  # "B": binary 1x1 projection, as RBNN's CIFAR ResNet-18
                self.shortcut = nn.Sequential(layers.conv(in_planes, planes, 1, stride), nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out)) + self.shortcut(x)
        return self.act(out)


class CifarResNet(nn.Module):
    def __init__(
        self,
        layers: BinaryLayers,
        depths: list[int],
        widths: list[int],
        num_classes: int,
        in_channels: int,
        shortcut: str,
        stem_act: bool,
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.stem_act = nn.Hardtanh(inplace=True) if stem_act else nn.Identity()
        blocks, in_planes = [], widths[0]
        for stage, (depth, planes) in enumerate(zip(depths, widths)):
            for i in range(depth):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(BasicBlock(layers, in_planes, planes, stride, shortcut))
                in_planes = planes
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.bn2 = nn.BatchNorm1d(in_planes)
        self.fc = nn.Linear(in_planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem_act(self.bn1(self.conv1(x)))
        x = self.pool(self.layers(x)).flatten(1)
        return self.fc(self.bn2(x))


@register_model("resnet20_1w1a", default_method="rbnn", input_size=32,
                source="RBNN models_cifar/resnet.py (He et al. ResNet-20)")
def resnet20_1w1a(num_classes, in_channels, image_size, layers):
    model = CifarResNet(layers, [3, 3, 3], [16, 32, 64], num_classes, in_channels, shortcut="A", stem_act=True)
    return init_weights(model, "rbnn_cifar", classifier=model.fc)


@register_model("resnet18_1w1a", default_method="rbnn", input_size=32,
                source="RBNN models_cifar/resnet2.py (CIFAR ResNet-18); image_size >= 64: models_imagenet/resnet.py")
@resarch_options(RBNN_IMAGENET, fixed=("depths",))
def resnet18_1w1a(num_classes, in_channels, image_size, layers, **options):
    if image_size >= 64:  # RBNN's main.py takes models_imagenet's ResNet-18 for TinyImageNet/ImageNet
        return rbnn_imagenet_resnet((2, 2, 2, 2), layers, num_classes, in_channels, image_size, **options)
    widths = options.pop("widths", (64, 128, 256, 512))
    if options:
        raise ValueError(f"resnet18_1w1a below 64x64 is RBNN's CIFAR ResNet-18, whose only option is widths "
                         f"(got {', '.join(sorted(options))}); the others apply to its ImageNet form")
    return CifarResNet(layers, [2, 2, 2, 2], list(widths), num_classes, in_channels, shortcut="B", stem_act=False)
