"""Pieces shared by the model definitions."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from onebit.layers import BinaryConv2d, BinaryLinear
from onebit.quant.base import get_quantizer
from onebit.quant.methods import Method, get_method


class BinaryLayers:
    """Builds the binary layers of a model with one method's quantizers.

    Model definitions call ``layers.conv(...)``/``layers.linear(...)`` wherever the
    reference architecture has a binarized layer; each call gets fresh quantizers.
    """

    def __init__(self, method: str | Method, binary_type=(True, True), pad_value: float = 0.0):
        self.method = get_method(method)
        self.binary_activations, self.binary_weights = (bool(b) for b in binary_type)
        self.pad_value = pad_value

    def _quantizers(self) -> dict:
        return dict(
            input_quantizer=self.method.input_quantizer if self.binary_activations else None,
            weight_quantizer=self.method.weight_quantizer if self.binary_weights else None,
            **self.method.conv_kwargs,
        )

    def conv(self, in_channels, out_channels, kernel_size, stride=1, padding=0, groups=1, bias=False) -> BinaryConv2d:
        return BinaryConv2d(
            in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=bias,
            pad_value=self.pad_value, **self._quantizers(),
        )

    def linear(self, in_features, out_features, bias=False) -> BinaryLinear:
        return BinaryLinear(in_features, out_features, bias, **self._quantizers())

    def input_sign(self, layer: nn.Module) -> nn.Module:
        """The method's activation quantizer for the input of the real ``layer``, built for it, where
        the reference puts a sign apart from the layer it feeds (e.g. sign -> dropout -> linear);
        ``nn.Identity`` when activations stay real."""
        quantizer = get_quantizer(self.method.input_quantizer) if self.binary_activations else None
        if quantizer is None:
            return nn.Identity()
        quantizer.build(layer)
        return quantizer


class ShortcutA(nn.Module):
    """Parameter-free "option A" shortcut (He et al. 2016): subsample by 2 and zero-pad
    ``pad`` channels on each side."""

    def __init__(self, pad: int):
        super().__init__()
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))
