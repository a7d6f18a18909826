r"""Learned scales applied to a binary layer's output (``BinaryConv2d(..., output_scale=...)``).

XNOR-Net++ (Bulat & Tzimiropoulos, BMVC 2019) replaces XNOR-Net's analytic weight and
activation scales by one learned factor ``Gamma`` on the output of the binary convolution,
initialised to 1 and trained by backprop:

* ``shape="rank1"`` (default, the paper's recommended case 3): ``Gamma = a (x) b (x) c`` with
  ``a`` per output channel, ``b`` per output row, ``c`` per output column;
* ``shape="channel"`` (case 1): ``Gamma = a`` only, resolution-independent.

Two ways to size it:

* standalone after a convolution whose output size is known (Real-to-Binary's strong
  baseline): ``LearnedScale(channels=C, size=(H, W))`` creates its parameters at once;
* as a binary layer's ``output_scale`` (the xnorpp method): the layer calls :meth:`build`.
  The layer does not know its output resolution (it depends on the input image size and on
  the layers before it) and parameters must exist before the optimizer is created, so the
  spatial factors get ``max_side`` entries and the first ``H_out`` / ``W_out`` are used
  (BiBench does the same with 2000). Unused entries get no gradient.

An output larger than the spatial factors (or, for a standalone scale, of another size than
``size``) is an error naming the option to raise.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["LearnedScale"]


class LearnedScale(nn.Module):
    """XNOR-Net++'s learned output scale ``Gamma``: ``channel`` ``(C, 1, 1)``, and for
    ``shape="rank1"`` also ``row`` ``(H, 1)`` and ``column`` ``(W,)``, all initialised to 1."""

    def __init__(self, shape: str = "rank1", max_side: int = 64, channels: int | None = None,
                 size: tuple[int, int] | None = None):
        super().__init__()
        if shape not in ("rank1", "channel"):
            raise ValueError(f"shape must be 'rank1' or 'channel', got {shape!r}")
        self.shape = shape
        self.max_side = int(max_side)
        self.size = tuple(size) if size is not None else None  # exact output size, when known
        if channels is not None:
            self._create(channels, spatial=True, size=self.size or (self.max_side, self.max_side))

    def build(self, layer: nn.Module) -> None:
        spatial = hasattr(layer, "out_channels")
        channels = layer.out_channels if spatial else layer.out_features
        self._create(channels, spatial, (self.max_side, self.max_side), layer.weight.device)

    def _create(self, channels: int, spatial: bool, size: tuple[int, int], device=None) -> None:
        self.channel = nn.Parameter(torch.ones((channels, 1, 1) if spatial else (channels,), device=device))
        if self.shape == "rank1" and spatial:
            self.row = nn.Parameter(torch.ones(size[0], 1, device=device))
            self.column = nn.Parameter(torch.ones(size[1], device=device))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        y = y * self.channel
        if hasattr(self, "row"):
            h, w = y.shape[-2:]
            if (h, w) != (self.size or (h, w)) or h > len(self.row) or w > len(self.column):
                raise ValueError(
                    f"output of {h}x{w} does not fit the learned scale's {len(self.row)}x{len(self.column)}: "
                    "raise the method option max_side, or build the model with the image_size you feed it"
                )
            y = y * self.row[:h] * self.column[:w]
        return y

    def extra_repr(self) -> str:
        return f"shape={self.shape!r}, " + (f"size={self.size}" if self.size else f"max_side={self.max_side}")
