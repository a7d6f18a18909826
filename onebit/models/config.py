"""The network a run's configuration describes: the keys that define it and how it is built.

``onebit train`` builds its model with :func:`build_model`; ``load_trained_model``, ``onebit
summary`` and ``onebit export`` rebuild a trained one the same way from the configuration saved
in its checkpoint, with :data:`MODEL_DEFAULTS` for keys an older configuration lacks.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from onebit.models.registry import create_model, get_entry
from onebit.quant.methods import Method, get_method, parse_method_options

__all__ = ["MODEL_KEYS", "MODEL_DEFAULTS", "configured_method", "build_model"]

MODEL_DEFAULTS: dict[str, Any] = {
    "method": None,  # the model's own
    "method_options": [],
    "pad_value": 0.0,
    "a32": False,
    "w32": False,
    "rotation_update": 1,
    "use_gpu": False,
    "model_kwargs": {},
}
"""The keys besides ``model`` that define the network, with the values ``onebit train`` starts from."""

MODEL_KEYS = ("model", *MODEL_DEFAULTS)
"""Keys of a configuration that define the network: an evaluated checkpoint brings its own."""


def configured_method(config: dict[str, Any]) -> Method:
    """The model's (or ``config["method"]``'s) method with the keys that are its options applied:
    ``rotation_update/use_gpu/a32`` for RBNN, ``method_options`` for any."""
    method = get_method(config["method"] or get_entry(config["model"]).default_method)
    options = method.options()
    flags = {k: config[k] for k in ("rotation_update", "use_gpu", "a32") if k in options}
    extra = config.get("method_options") or {}
    flags.update(parse_method_options(extra) if isinstance(extra, list) else extra)
    return method.with_options(**flags)


def build_model(config: dict[str, Any], num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """The network ``config`` describes, for inputs of ``in_channels`` x ``image_size``^2 and ``num_classes``."""
    config = {**MODEL_DEFAULTS, **config}
    method = configured_method(config)
    # W1A32 removes the activation quantizer, unless the method keeps it in an a32 mode of its own (RBNN)
    binary_activations = not config["a32"] or "a32" in method.options()
    return create_model(
        config["model"],
        num_classes,
        in_channels=in_channels,
        image_size=image_size,
        method=method,
        binary_type=(binary_activations, not config["w32"]),
        pad_value=config["pad_value"],
        **config["model_kwargs"],
    )
