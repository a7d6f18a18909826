r"""DoReFa-Net at 1 bit (Zhou et al., 2016, arXiv:1606.06160), as the paper and tensorpack.

* Weights (:class:`DorefaWeight`): ``E sign(W)`` with ``E = mean |W|`` over the whole layer
  (one scalar, no gradient), backward identity (no clipping).
* Activations (:class:`DorefaInput`): ``round(clip(x, 0, 1))`` in ``{0, 1}`` (the k = 1 case
  of ``quantize_k``), backward the clip's derivative ``1[0 <= x <= 1]`` (rounding is
  straight-through). ``torch.round`` rounds half to even: 0.5 -> 0.

The default is the paper's unsigned ``{0, 1}`` activations and
per-layer weight scale. BiBench's variant, ``+-1`` activations with the clipped STE and a
per-output-channel scale, is ``signed=True`` / ``scale="channel"``.
"""
from __future__ import annotations

import torch

from onebit.quant.base import Quantizer, register_quantizer
from onebit.quant.functional import (
    channel_mean_abs, clipped_identity_grad, identity_grad, scaled_sign_with_surrogate, sign_with_surrogate,
)

__all__ = ["DorefaInput", "DorefaWeight"]


class _RoundClip(torch.autograd.Function):
    """``round(clip(x, 0, 1))`` forward; ``1[0 <= x <= 1]`` backward."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.round(x.clamp(0.0, 1.0))

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return grad_output * ((x >= 0) & (x <= 1)).to(grad_output.dtype)


@register_quantizer("dorefa_input")
class DorefaInput(Quantizer):
    """DoReFa's 1-bit activations: ``{0, 1}`` (default) or ``+-1`` with ``signed=True``."""

    def __init__(self, signed: bool = False):
        super().__init__()
        self.signed = bool(signed)
        self.register_buffer("_clip", torch.tensor(1.0), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.signed:
            return sign_with_surrogate(x, clipped_identity_grad, self._clip.to(x.dtype))
        return _RoundClip.apply(x)

    def extra_repr(self) -> str:
        return f"signed={self.signed}"


@register_quantizer("dorefa_weight")
class DorefaWeight(Quantizer):
    """``E sign(W)``, ``E = mean|W|`` per layer (``scale="layer"``, default) or per output channel."""

    def __init__(self, scale: str = "layer"):
        super().__init__()
        if scale not in ("layer", "channel"):
            raise ValueError(f"scale must be 'layer' or 'channel', got {scale!r}")
        self.scale = scale

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        e = w.detach().abs().mean() if self.scale == "layer" else channel_mean_abs(w)
        return scaled_sign_with_surrogate(w, e, identity_grad)

    def extra_repr(self) -> str:
        return f"scale={self.scale!r}"
