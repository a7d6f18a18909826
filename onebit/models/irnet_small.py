"""The small networks of the IR-Net community repository (seed 003).

* ``alexnet_1w1a``: the README's AlexNet layer order, conv -> BN -> pool -> hardtanh (x2),
  conv -> BN -> hardtanh (x2), conv -> BN -> pool -> hardtanh, FC. The repository's file
  was not found, so widths and kernels are **our choice**: torchvision AlexNet's widths
  64-192-384-256-256 with 3x3 kernels (padding 1) for 32x32 inputs. As in IR-Net's main
  table, the first convolution and the classifier stay full precision.
* ``irnet_mnist_1w1a``: the MNIST branch of its ``vgg.py``: three binary 3x3 convolutions
  1 -> 32 -> 64 -> 128 (the first one too), each followed by a 2x2 max-pool with
  ``ceil_mode`` (28 -> 14 -> 7 -> 4) and no BatchNorm, then a hard sign, dropout 0.5, a real
  Linear(2048, classes) and a ReLU on the logits (kept as in the reference; its LogSoftmax is
  left to the loss).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from onebit.models.common import BinaryLayers
from onebit.models.registry import register_model

__all__ = ["AlexNetSmall", "MnistNet"]


class AlexNetSmall(nn.Module):
    def __init__(self, layers: BinaryLayers, num_classes: int, in_channels: int, image_size: int,
                 widths=(64, 192, 384, 256, 256)):
        super().__init__()
        pooled_after = (0, 1, 4)
        if image_size % 8:
            raise ValueError(f"alexnet_1w1a needs an image side divisible by 8, got {image_size}")
        body, cin = [], in_channels
        for i, cout in enumerate(widths):
            conv = nn.Conv2d(cin, cout, 3, 1, 1, bias=False) if i == 0 else layers.conv(cin, cout, 3, 1, 1)
            body += [conv, nn.BatchNorm2d(cout)]
            body += [nn.MaxPool2d(2)] if i in pooled_after else []
            body += [nn.Hardtanh()]
            cin = cout
        self.features = nn.Sequential(*body)
        self.fc = nn.Linear(cin * (image_size // 8) ** 2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).flatten(1))


class MnistNet(nn.Module):
    def __init__(self, layers: BinaryLayers, num_classes: int, in_channels: int, image_size: int,
                 widths=(32, 64, 128)):
        super().__init__()
        body, cin, side = [], in_channels, image_size
        for cout in widths:
            body += [layers.conv(cin, cout, 3, 1, 1), nn.MaxPool2d(2, ceil_mode=True)]
            cin, side = cout, math.ceil(side / 2)
        self.features = nn.Sequential(*body)
        self.fc = nn.Linear(cin * side * side, num_classes)
        self.sign = layers.input_sign(self.fc)
        self.dropout = nn.Dropout(0.5)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.sign(self.features(x).flatten(1))
        return self.relu(self.fc(self.dropout(x)))


@register_model("alexnet_1w1a", default_method="irnet", input_size=32,
                source="IR-Net community repo (seed 003) README AlexNet; widths ours")
def alexnet_1w1a(num_classes, in_channels, image_size, layers):
    return AlexNetSmall(layers, num_classes, in_channels, image_size)


@register_model("irnet_mnist_1w1a", default_method="irnet", input_size=28,
                source="IR-Net community repo (seed 003) vgg.py, MNIST branch")
def irnet_mnist_1w1a(num_classes, in_channels, image_size, layers):
    return MnistNet(layers, num_classes, in_channels, image_size)
