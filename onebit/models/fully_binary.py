"""Fully binary networks: seed 003's "first layer binary, bn layer => offset, BinarizeLinear".

Every convolution, the first included, and the classifier take +-1 inputs and +-1 weights:

* the image is encoded to bits by :class:`~onebit.layers.ThermometerEncoding` (3 -> 9 channels);
* each BatchNorm is replaced by :class:`Offset`: a fixed ``s = 1/sqrt(fan_in)`` (the spread of a
  dot product of ``fan_in`` random +-1 terms, which keeps the values in the hardtanh's range
  without statistics) and a learnable per-channel offset ``b``. A layer's output bit is then
  ``sign(s * alpha_o * acc + b_o)`` = ``acc >= ceil(-b_o / (s * alpha_o))`` for the integer
  accumulator ``acc``: a per-channel integer threshold (``alpha_o > 0`` is the method's weight scale);
* the classifier is a :class:`~onebit.layers.BinaryLinear` followed by :class:`LogitScale`, one
  fixed factor: the only real multiply left (``logits_o = g * s * alpha_o * acc_o``).

Max pools act on the accumulators (before the offset, as seed 003's conv - pool - bn order).
ResNet-20's residual stream holds fixed-point values (multiples of 1/16 in [-1, 1], see
:class:`_Block`); its average pool before the classifier only feeds its sign (= the sign of the sum).

* ``vgg_small_fb_1w1a``: seed 003's VGG-small order, 128-128(pool)-256-256(pool)-512-512(pool);
* ``resnet20_fb_1w1a``: ResNet-20 (16/32/64, option-A shortcuts) with offsets for BNs, the
  residual adds kept on a fixed-point stream (``levels`` option: its steps per unit, default 16);
* ``alexnet_fb_1w1a``: the community AlexNet's order and widths (``alexnet_1w1a``), fully binary.

Seed 003 reports 68.4 (ResNet-20) and 64.8 (VGG-small, fp16) top-1 on CIFAR-10 for the first two
with IR-Net's layers (``configs/irnet_community/``); AlexNet's row is "????".
"""
from __future__ import annotations

import math

import torch
from torch import nn

from onebit.layers import FixedPoint, ThermometerEncoding
from onebit.layers.activations import LearnableBias
from onebit.models.common import BinaryLayers, ShortcutA
from onebit.models.registry import register_model

__all__ = ["Offset", "LogitScale", "FullyBinaryPlain", "FullyBinaryResNet"]


class Offset(LearnableBias):
    """BN => offset: ``x / sqrt(fan_in) + b``, ``b`` learnable per channel (initialised to 0)."""

    def __init__(self, channels: int, fan_in: int):
        super().__init__(channels)
        self.scale = 1.0 / math.sqrt(fan_in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x * self.scale)

    def extra_repr(self) -> str:
        return f"channels={self.bias.numel()}, scale={self.scale:.4g}"


class LogitScale(nn.Module):
    """The logits' scale: ``g * x / sqrt(fan_in)`` with a fixed ``g`` (a buffer, default 1).

    ``g`` is not learned: a learned ``g`` went to 0 within 50 SGD steps at lr 0.1 (while the binary
    classifier's signs are still noise, shrinking the logits to uniform lowers the loss to ln 10), and
    every gradient of the network, a multiple of ``g``, vanished with it (BENCHMARKS.md, Fully binary)."""

    def __init__(self, fan_in: int, gain: float = 1.0):
        super().__init__()
        self.scale = 1.0 / math.sqrt(fan_in)
        self.register_buffer("gain", torch.tensor(float(gain)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * (self.gain * self.scale)


class FullyBinaryPlain(nn.Module):
    """Encoder, then per layer ``binary conv -> [max pool] -> offset -> hardtanh``, then the binary classifier."""

    def __init__(self, layers: BinaryLayers, plan, num_classes: int, in_channels: int, image_size: int,
                 thresholds=(-1.0, 0.0, 1.0)):
        super().__init__()
        pools = sum(pool for _, pool in plan)
        if image_size % 2 ** pools:
            raise ValueError(f"this network needs an image side divisible by {2 ** pools}, got {image_size}")
        self.encode = ThermometerEncoding(thresholds)
        body, cin = [], in_channels * self.encode.levels
        for cout, pool in plan:
            body += [layers.conv(cin, cout, 3, 1, 1)] + ([nn.MaxPool2d(2)] if pool else [])
            body += [Offset(cout, 9 * cin), nn.Hardtanh()]
            cin = cout
        self.features = nn.Sequential(*body)
        features = cin * (image_size // 2 ** pools) ** 2
        self.classifier = layers.linear(features, num_classes)
        self.logit_scale = LogitScale(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logit_scale(self.classifier(self.features(self.encode(x)).flatten(1)))


class _Block(nn.Module):
    """ResNet basic block with offsets for BNs: ``ht(fix(off2(conv2(ht(off1(conv1(x)))))) + shortcut(x))``.

    ``fix`` (:class:`~onebit.layers.FixedPoint`) rounds the residual branch to multiples of
    ``1/levels``: the residual stream ``x`` then holds fixed-point numbers in [-1, 1] (``2*levels + 1``
    values), added and clamped exactly, i.e. an integer implementation in units of ``1/levels``."""

    def __init__(self, layers: BinaryLayers, cin: int, cout: int, stride: int, levels: int):
        super().__init__()
        self.conv1, self.off1 = layers.conv(cin, cout, 3, stride, 1), Offset(cout, 9 * cin)
        self.conv2, self.off2 = layers.conv(cout, cout, 3, 1, 1), Offset(cout, 9 * cout)
        self.fix = FixedPoint(levels)
        self.act = nn.Hardtanh()
        self.shortcut = ShortcutA((cout - cin) // 2) if stride != 1 or cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.off1(self.conv1(x)))
        return self.act(self.fix(self.off2(self.conv2(out))) + self.shortcut(x))


class FullyBinaryResNet(nn.Module):
    def __init__(self, layers: BinaryLayers, depths, widths, num_classes: int, in_channels: int,
                 thresholds=(-1.0, 0.0, 1.0), levels: int = 16):
        super().__init__()
        self.encode = ThermometerEncoding(thresholds)
        self.conv1 = layers.conv(in_channels * self.encode.levels, widths[0], 3, 1, 1)
        self.off1, self.act = Offset(widths[0], 9 * in_channels * self.encode.levels), nn.Hardtanh()
        self.fix = FixedPoint(levels)
        blocks, cin = [], widths[0]
        for stage, (depth, cout) in enumerate(zip(depths, widths)):
            for i in range(depth):
                blocks.append(_Block(layers, cin, cout, 2 if stage > 0 and i == 0 else 1, levels))
                cin = cout
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = layers.linear(cin, num_classes)
        self.logit_scale = LogitScale(cin)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.fix(self.off1(self.conv1(self.encode(x)))))
        return self.logit_scale(self.classifier(self.pool(self.layers(x)).flatten(1)))


def _kaiming(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight)
    return model


VGG_PLAN = [(128, False), (128, True), (256, False), (256, True), (512, False), (512, True)]
ALEXNET_PLAN = [(64, True), (192, True), (384, False), (256, False), (256, True)]


@register_model("vgg_small_fb_1w1a", default_method="irnet", input_size=32,
                source="seed 003: VGG-small, first layer binary, BN => offset, binary classifier")
def vgg_small_fb_1w1a(num_classes, in_channels, image_size, layers, thresholds=(-1.0, 0.0, 1.0)):
    return _kaiming(FullyBinaryPlain(layers, VGG_PLAN, num_classes, in_channels, image_size, tuple(thresholds)))


@register_model("alexnet_fb_1w1a", default_method="irnet", input_size=32,
                source="seed 003: AlexNet, first layer binary, BN => offset, BinarizeLinear")
def alexnet_fb_1w1a(num_classes, in_channels, image_size, layers, thresholds=(-1.0, 0.0, 1.0)):
    return _kaiming(FullyBinaryPlain(layers, ALEXNET_PLAN, num_classes, in_channels, image_size, tuple(thresholds)))


@register_model("resnet20_fb_1w1a", default_method="irnet", input_size=32,
                source="seed 003: ResNet-20, first layer binary, BN => offset, binary classifier")
def resnet20_fb_1w1a(num_classes, in_channels, image_size, layers, thresholds=(-1.0, 0.0, 1.0), levels=16):
    return _kaiming(FullyBinaryResNet(layers, [3, 3, 3], [16, 32, 64], num_classes, in_channels, tuple(thresholds),
                                      levels))
