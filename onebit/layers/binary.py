"""Binary convolution and linear layers that take quantizers as arguments (larq-style).

Each layer computes ``op(input_quantizer(x), weight_quantizer(W)) + bias``, times the weight
quantizer's ``output_gain()`` and the ``output_scale`` where there are any; with both
quantizers ``None`` it is exactly the float PyTorch layer. Latent (real) weights are kept
for training; the deploy step reads the quantizers to export bits.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from onebit.quant.base import QuantizerSpec, get_quantizer, precision_of


class _BinaryMixin:
    """Shared quantizer plumbing of the binary layers."""

    def _init_quantizers(
        self, input_quantizer: QuantizerSpec, weight_quantizer: QuantizerSpec, output_scale: QuantizerSpec = None
    ) -> None:
        self.input_quantizer = get_quantizer(input_quantizer)
        self.weight_quantizer = get_quantizer(weight_quantizer)
        self.output_scale = get_quantizer(output_scale)
        for q in (self.input_quantizer, self.weight_quantizer, self.output_scale):
            if q is not None and hasattr(q, "build"):
                q.build(self)

    @property
    def input_bits(self) -> int:
        return precision_of(self.input_quantizer)

    @property
    def weight_bits(self) -> int:
        return precision_of(self.weight_quantizer)

    def quantized_input(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.input_quantizer is None else self.input_quantizer(x)

    def output_gain(self) -> torch.Tensor | None:
        """The weight quantizer's per-output-channel output factor, flat (None if it has none)."""
        gain = getattr(self.weight_quantizer, "output_gain", None)
        gain = gain() if callable(gain) else None
        return None if gain is None else gain.reshape(-1)

    def binary_weight(self) -> torch.Tensor:
        """What the weight quantizer returns: the weight the layer's op runs with."""
        return self.weight if self.weight_quantizer is None else self.weight_quantizer(self.weight)

    def quantized_weight(self) -> torch.Tensor:
        """The weight the layer's output is linear in: :meth:`binary_weight` times the output gain."""
        w, gain = self.binary_weight(), self.output_gain()
        return w if gain is None else w * gain.view(-1, *[1] * (w.dim() - 1))

    def scaled_output(self, y: torch.Tensor) -> torch.Tensor:
        gain = self.output_gain()
        if gain is not None:
            y = y * gain.view(-1, *[1] * (y.dim() - 2))
        return y if self.output_scale is None else self.output_scale(y)


class BinaryConv2d(_BinaryMixin, nn.Conv2d):
    """``nn.Conv2d`` whose input and weight pass through quantizers.

    ``pad_value`` is the value the *quantized* input is padded with. ``0.0`` is what the
    papers do (the border taps are then a third value, 0); ``1.0`` pads with +1 so that the
    trained network is exactly a 1-bit network, which the bit-packed runtime computes
    natively. The exported runtime reproduces either choice exactly.

    ``output_scale`` (optional module or factory, e.g. XNOR-Net++'s learned scale
    :class:`onebit.quant.scale.LearnedScale`) multiplies the layer's output.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups: int = 1,
        bias: bool = False,
        *,
        input_quantizer: QuantizerSpec = "ste_sign",
        weight_quantizer: QuantizerSpec = "ste_sign",
        pad_value: float = 0.0,
        output_scale: QuantizerSpec = None,
    ):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias)
        if not isinstance(self.padding, tuple):
            raise ValueError("BinaryConv2d needs explicit integer padding, not a padding mode string")
        self.pad_value = float(pad_value)
        self._init_quantizers(input_quantizer, weight_quantizer, output_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.quantized_input(x)
        w = self.binary_weight()
        padding = self.padding
        if self.pad_value != 0.0 and any(padding):
            ph, pw = padding
            x = F.pad(x, (pw, pw, ph, ph), value=self.pad_value)
            padding = 0
        return self.scaled_output(F.conv2d(x, w, self.bias, self.stride, padding, self.dilation, self.groups))

    def extra_repr(self) -> str:
        return super().extra_repr() + (f", pad_value={self.pad_value:g}" if self.pad_value else "")


class BinaryLinear(_BinaryMixin, nn.Linear):
    """``nn.Linear`` whose input and weight pass through quantizers."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = False,
        *,
        input_quantizer: QuantizerSpec = "ste_sign",
        weight_quantizer: QuantizerSpec = "ste_sign",
        output_scale: QuantizerSpec = None,
    ):
        super().__init__(in_features, out_features, bias)
        self._init_quantizers(input_quantizer, weight_quantizer, output_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scaled_output(F.linear(self.quantized_input(x), self.binary_weight(), self.bias))
