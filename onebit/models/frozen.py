"""Bi-Real Net's last step (seed 000): fix the weights to -1/+1, retrain only the batch norms.

``onebit train --bn_retrain CKPT`` rebuilds the checkpoint's network, then in every layer with
1-bit weights replaces the latent weight by the value its quantizer produces in eval mode (the
sign times the method's scale, so the scale is folded into the stored weight: Bi-Real's
mean |W|, IR-Net's power of two, RBNN's rotation; RBNN's alpha stays the output gain, where its
forward applies it) and the quantizer by
:class:`~onebit.quant.FrozenBinaryWeight`, which uses that weight as it is. Every parameter but
the BatchNorm affine ones is frozen; training (``--epochs``, default 1) adapts those and
re-estimates the running statistics under the final binary weights. Before that training the
network computes exactly what the checkpoint computes in eval mode.

The run's config records ``frozen_weights: true``, so its checkpoints rebuild the frozen network
(``-e``, ``--resume``, ``onebit export``) and export like any checkpoint.
"""
from __future__ import annotations

import torch
from torch import nn

from onebit.quant import FrozenBinaryWeight, precision_of

__all__ = ["freeze_binary_weights", "train_only_batchnorm", "frozen_for_bn_retrain"]


@torch.no_grad()
def freeze_binary_weights(model: nn.Module) -> list[str]:
    """In place: store each 1-bit weight's binarized value (scale folded) and stop re-binarizing
    it. Returns the names of the layers changed."""
    changed = []
    for name, layer in model.named_modules():
        q = getattr(layer, "weight_quantizer", None)
        if q is None or precision_of(q) != 1 or isinstance(q, FrozenBinaryWeight):
            continue
        was_training = layer.training
        layer.eval()
        binary, gain = layer.binary_weight().detach().clone(), layer.output_gain()
        layer.train(was_training)
        layer.weight.copy_(binary)
        layer.weight_quantizer = FrozenBinaryWeight(gain)
        changed.append(name)
    return changed


def train_only_batchnorm(model: nn.Module) -> int:
    """Freeze every parameter but the BatchNorm weights and biases; returns how many values train."""
    for p in model.parameters():
        p.requires_grad_(False)
    trainable = 0
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            for p in m.parameters(recurse=False):
                p.requires_grad_(True)
                trainable += p.numel()
    if not trainable:
        raise ValueError("--bn_retrain: the network has no BatchNorm parameters to train")
    return trainable


def frozen_for_bn_retrain(model: nn.Module) -> list[str]:
    """Both steps; the network of a ``frozen_weights`` config."""
    changed = freeze_binary_weights(model)
    train_only_batchnorm(model)
    return changed
