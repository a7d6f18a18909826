"""Input encodings that turn a normalised image into +-1 bits, so that the first convolution
can be binary too (seed 003's plan: "3 channel => 9 channel").

:class:`ThermometerEncoding` compares each input channel with ``K`` increasing thresholds and
emits one +-1 plane per threshold: channel ``c`` becomes channels ``c*K .. c*K+K-1`` with
``bit_k = +1 if x_c >= t_k else -1`` (so 3 RGB channels and the default 3 thresholds give 9).
The bits of one channel are a thermometer code of a (K+1)-level quantisation of the pixel, and
their sum ``2*level - K`` is linear in that level: a binary convolution over them sees each
channel's intensity linearly, which bit-planes (whose bits weigh 1, 2, 4...) would not give it.
Thresholds are in the units of the normalised input (the data pipeline subtracts the data set's
mean and divides by its std): ``t = (-1, 0, 1)`` is pixel >= mean - std, >= mean, >= mean + std,
per channel. It has no gradient (it is the input).
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["ThermometerEncoding", "thermometer_bits"]


def thermometer_bits(x: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """``[N, C, H, W]`` -> ``[N, C*K, H, W]`` +-1: channel ``c*K + k`` is ``+1`` where ``x_c >= t_k``
    (the definition the training graph, the 1-bit runtime and the golden vectors share)."""
    bits = torch.where(x.unsqueeze(2) >= thresholds.view(1, 1, -1, 1, 1), 1.0, -1.0)
    return bits.flatten(1, 2)


class ThermometerEncoding(nn.Module):
    def __init__(self, thresholds: tuple[float, ...] = (-1.0, 0.0, 1.0)):
        super().__init__()
        if list(thresholds) != sorted(thresholds) or not thresholds:
            raise ValueError(f"thresholds must be increasing, got {thresholds}")
        self.register_buffer("thresholds", torch.tensor(thresholds, dtype=torch.float32))

    @property
    def levels(self) -> int:
        return len(self.thresholds)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return thermometer_bits(x, self.thresholds)

    def extra_repr(self) -> str:
        return f"thresholds={self.thresholds.tolist()}"
