"""The weight-sign flip ratio: per binary layer, the share of its binary weights whose sign changed
since the previous epoch (a BNN-specific measure of training stability; it falls towards 0 as
the binary network settles).

The signs are those the layer computes with, ``sign(weight_quantizer(W))`` in eval mode: the
latent weights' signs for sign-based methods (BNN, XNOR-Net, Bi-Real), the standardised weights'
for IR-Net, the rotated weights' for RBNN.
"""
from __future__ import annotations

import torch
from torch import nn

from onebit.quant import precision_of

__all__ = ["binary_weight_signs", "SignFlips"]


@torch.no_grad()
def binary_weight_signs(model: nn.Module) -> dict[str, torch.Tensor]:
    """``{layer name: bool tensor (True where the binary weight is negative)}`` of every 1-bit-weight layer."""
    signs = {}
    with torch.random.fork_rng(devices=[]):  # a quantizer drawing random numbers must not shift the run's stream
        for name, layer in model.named_modules():
            if precision_of(getattr(layer, "weight_quantizer", None)) != 1:
                continue
            was_training = layer.training
            layer.eval()
            signs[name] = (layer.quantized_weight() < 0).cpu()
            layer.train(was_training)
    return signs


class SignFlips:
    """Call :meth:`update` after each epoch: the flip ratio of every layer since the last call."""

    def __init__(self, model: nn.Module):
        self.previous = binary_weight_signs(model)

    def update(self, model: nn.Module) -> dict[str, float]:
        current = binary_weight_signs(model)
        ratios = {name: float((signs != self.previous[name]).float().mean())
                  for name, signs in current.items() if name in self.previous}
        self.previous = current
        return ratios
