"""A small binary CNN for tiny images (the embedded 8x8 digits default, MNIST-sized data).

Full-precision stem conv -> BN -> hardtanh, two binary 3x3 conv blocks (BN -> hardtanh,
max-pool), then a full-precision classifier: the usual "first and last layer real" rule.
"""
from __future__ import annotations

import torch
from torch import nn

from onebit.models.common import BinaryLayers
from onebit.models.registry import register_model


class SmallCNN(nn.Module):
    def __init__(self, layers: BinaryLayers, num_classes: int, in_channels: int, image_size: int, width: int = 64):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.Hardtanh())
        self.block1 = nn.Sequential(layers.conv(width, 2 * width, 3, 1, 1), nn.BatchNorm2d(2 * width), nn.Hardtanh(), nn.MaxPool2d(2))
        self.block2 = nn.Sequential(layers.conv(2 * width, 2 * width, 3, 1, 1), nn.BatchNorm2d(2 * width), nn.Hardtanh(), nn.MaxPool2d(2))
        side = image_size // 4
        self.head = nn.Sequential(nn.Flatten(), nn.BatchNorm1d(2 * width * side * side), nn.Linear(2 * width * side * side, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block2(self.block1(self.stem(x))))


@register_model("cnn_small_1w1a", source="onebit (default model for 8x8 digits and 28x28 data)", input_size=8)
def cnn_small_1w1a(num_classes, in_channels, image_size, layers, width: int = 64):
    return SmallCNN(layers, num_classes, in_channels, image_size, width)
