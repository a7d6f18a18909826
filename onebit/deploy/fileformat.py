"""The ``.onebit`` file: a safetensors container (no pickle) whose metadata holds a JSON graph.

Graph JSON (``metadata["onebit"]``)::

    {"format": "onebit", "version": 2, "model": {...what was exported...},
     "nodes": [{"name": ..., "op": ..., ...}, ...]}

Node ``op`` values: ``input``, ``output`` (``inputs``), ``constant`` (``tensor``), ``call``
(``fn`` a name from the runtime's whitelist, ``args`` a list and ``kwargs`` an object (absent
when empty) of values encoded as below), ``method`` (``fn`` a whitelisted tensor method, ``args[0]`` the
tensor), ``binary_conv2d`` and ``binary_linear`` (``inputs``: the input and an optional
residual; ``attrs``: ``in_channels``/``in_features``, ``stride``, ``padding``, ``groups``
(default 1), ``pad_value`` (0, the papers' zero padding, by default; or 1), ``sample_mean_threshold``
(default false), ``bits_for`` (the binary conv whose input bits this
one writes: from the float output unless ``bits_threshold`` is present); ``tensors``: the roles
present, stored under the key
``NAME.ROLE``: ``weight``, ``affine``
(``[2, cout]``: the output is ``fma(dot, affine[0], affine[1])``), ``pre`` (``[cout]``, since version 2: the
output is ``fma(dot * pre, affine[0], affine[1])``, ``dot * pre`` rounded to float32), ``threshold`` (of the input
sign), ``bits_threshold`` / ``bits_flip`` (int32 / uint8: the next conv's input bit is
``(dot < t) != flip``), ``bits_float_threshold``). Arguments are JSON values, with ``{"node": name}`` for a
node's value, ``{"tensor": key}`` for a stored tensor, ``{"slice": [start, stop, step]}``,
``{"ellipsis": true}`` and ``{"tuple": [...]}``.

Fully binary networks (no float layer between binary layers): ``call`` nodes ``onebit.thermometer``
(the input encoding), ``onebit.sign_step`` (the next bits from integer thresholds on a conv's
accumulator) and ``onebit.level_step`` (a fixed-point residual stream from an integer table on the
accumulator), formulas in :mod:`onebit.deploy.ops`; a step names the conv it follows in ``step_of``
and stores its tensors under that conv's name (``step_threshold``, ``step_flip``, ``step_base``).

Binary weights are uint64 words ``[cout, kh, kw, ceil(cin_per_group / 64)]``, channel ``c`` at
bit ``c % 64`` of word ``c // 64``, bit 1 = -1 (the Larq Compute Engine convention).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["FORMAT", "VERSION", "save", "read", "encode_arg", "decode_arg"]

FORMAT = "onebit"
VERSION = 2  # written; 2 added the binary layers' ``pre`` role (a version-1 reader would ignore it)
READS = (1, 2)


def encode_arg(value: Any, node_name, tensor_key) -> Any:
    """JSON form of an argument; ``node_name(v)`` names a graph value (or returns None when ``v``
    is not one), ``tensor_key(t)`` stores a tensor and returns its key."""
    import torch

    name = node_name(value)
    if name is not None:
        return {"node": name}
    if isinstance(value, torch.Tensor):
        return {"tensor": tensor_key(value)}
    if isinstance(value, slice):
        return {"slice": [encode_arg(v, node_name, tensor_key) for v in (value.start, value.stop, value.step)]}
    if value is Ellipsis:
        return {"ellipsis": True}
    if isinstance(value, tuple):
        return {"tuple": [encode_arg(v, node_name, tensor_key) for v in value]}
    if isinstance(value, list):
        return [encode_arg(v, node_name, tensor_key) for v in value]
    if isinstance(value, dict):
        return {"dict": {str(k): encode_arg(v, node_name, tensor_key) for k, v in value.items()}}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.dtype):
        return {"dtype": str(value).removeprefix("torch.")}
    raise TypeError(f"cannot store an argument of type {type(value).__name__}: {value!r}")


def decode_arg(value: Any, node_value, tensor) -> Any:
    """Inverse of :func:`encode_arg`, with ``node_value(name)`` and ``tensor(key)`` resolving references."""
    import torch

    if isinstance(value, list):
        return [decode_arg(v, node_value, tensor) for v in value]
    if not isinstance(value, dict):
        return value
    (kind, payload), = value.items()
    if kind == "node":
        return node_value(payload)
    if kind == "tensor":
        return tensor(payload)
    if kind == "slice":
        return slice(*(decode_arg(v, node_value, tensor) for v in payload))
    if kind == "ellipsis":
        return Ellipsis
    if kind == "tuple":
        return tuple(decode_arg(v, node_value, tensor) for v in payload)
    if kind == "dict":
        return {k: decode_arg(v, node_value, tensor) for k, v in payload.items()}
    if kind == "dtype":
        dtype = getattr(torch, payload, None)
        if not isinstance(dtype, torch.dtype):
            raise ValueError(f"unknown dtype {payload!r} in the graph")
        return dtype
    raise ValueError(f"unknown argument kind {kind!r} in the graph")


def save(path: str | Path, graph: dict, tensors: dict[str, np.ndarray]) -> None:
    from safetensors.numpy import save_file

    graph = {"format": FORMAT, "version": VERSION, **graph}
    arrays = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    save_file(arrays, str(path), metadata={FORMAT: json.dumps(graph, separators=(",", ":"))})


def read(path: str | Path) -> tuple[dict, dict[str, np.ndarray]]:
    """The graph and the tensors of a ``.onebit`` file, with errors that say what is wrong."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no exported model at {path} (make one with: onebit export RUN/model_best.pth -o {path.name})")
    try:
        with safe_open(str(path), "np") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{path} is not a .onebit file (safetensors container expected): {e}") from None
    if FORMAT not in metadata:
        raise ValueError(f"{path} is a safetensors file but not an exported onebit model (no '{FORMAT}' metadata)")
    graph = json.loads(metadata[FORMAT])
    if graph.get("format") != FORMAT or graph.get("version") not in READS:
        raise ValueError(f"{path}: unsupported onebit file version {graph.get('version')!r} (this onebit reads "
                         f"{', '.join(map(str, READS))})")
    return graph, tensors
