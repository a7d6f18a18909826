"""Quantizers whose training hooks act on their layer's latent weight.

RBNN's rotation update (``on_epoch_start``) and BNN's weight clipping (``after_step``) run
outside the forward pass, when the engine calls them without arguments, so the quantizer
keeps a reference to the layer that built it. The reference is held in a tuple: assigning
the layer itself would register it as a submodule of its own quantizer (a cycle in
``modules()`` and ``state_dict``). ``copy.deepcopy`` and pickling follow it correctly.
"""
from __future__ import annotations

from torch import nn

from onebit.quant.base import Quantizer


class LayerBoundQuantizer(Quantizer):
    """A quantizer bound to the one layer that called its ``build``."""

    def build(self, layer: nn.Module) -> None:
        owner = getattr(self, "_owner", None)
        if owner is not None and owner[0] is not layer:
            raise ValueError(
                f"a {type(self).__name__} serves a single layer; give the layers a class or a factory "
                "(e.g. a method name), not one shared quantizer instance"
            )
        self._owner = (layer,)

    @property
    def layer(self) -> nn.Module:
        owner = getattr(self, "_owner", None)
        if owner is None:
            raise RuntimeError(f"{type(self).__name__} is not attached to a layer yet (build(layer) was not called)")
        return owner[0]
