r"""Learned scales applied to a binary layer's output (``BinaryConv2d(..., output_scale=...)``).

XNOR-Net++ (Bulat & Tzimiropoulos, BMVC 2019) replaces XNOR-Net's analytic weight and
activation scales by one learned factor ``Gamma`` on the output of the binary convolution,
initialised to 1 and trained by backprop:

* ``shape="rank1"`` (default, the paper's recommended case 3): ``Gamma = a (x) b (x) c`` with
  ``a`` per output channel, ``b`` per output row, ``c`` per output column;
* ``shape="channel"`` (case 1): ``Gamma = a`` only, resolution-independent.

Sizing the spatial factors: a layer does not know its output resolution when it is built
(it depends on the input image size and on the layers before it), and parameters must exist
before the optimizer is created, so ``b`` and ``c`` are allocated with ``max_side`` entries and
the first ``H_out`` / ``W_out`` are used (BiBench does the same with 2000). Unused entries get no
gradient. An output larger than ``max_side`` is an error naming the option to raise.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["LearnedScale"]


class LearnedScale(nn.Module):
    """XNOR-Net++'s learned output scale ``Gamma`` (``shape`` ``"rank1"`` or ``"channel"``)."""

    def __init__(self, shape: str = "rank1", max_side: int = 64):
        super().__init__()
        if shape not in ("rank1", "channel"):
            raise ValueError(f"shape must be 'rank1' or 'channel', got {shape!r}")
        self.shape = shape
        self.max_side = int(max_side)

    def build(self, layer: nn.Module) -> None:
        spatial = hasattr(layer, "out_channels")
        channels = layer.out_channels if spatial else layer.out_features
        device = layer.weight.device
        self.channel = nn.Parameter(torch.ones((channels, 1, 1) if spatial else (channels,), device=device))
        if self.shape == "rank1" and spatial:
            self.row = nn.Parameter(torch.ones(self.max_side, 1, device=device))
            self.column = nn.Parameter(torch.ones(self.max_side, device=device))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        y = y * self.channel
        if hasattr(self, "row"):
            h, w = y.shape[-2:]
            if max(h, w) > self.max_side:
                raise ValueError(
                    f"output of {h}x{w} exceeds the learned scale's max_side={self.max_side}; "
                    "raise the method option max_side"
                )
            y = y * self.row[:h] * self.column[:w]
        return y

    def extra_repr(self) -> str:
        return f"shape={self.shape!r}, max_side={self.max_side}"
