"""Run an exported ``.onebit`` model: binary layers on the compiled kernels, the rest on PyTorch ops.

``load(path)`` returns a :class:`OnebitModel`, callable on NCHW float32 input (NumPy array or
torch tensor) and returning logits of the same kind. It is not reentrant: calls from several
threads are serialised by a lock (use one model per thread for parallel serving).
"""
from __future__ import annotations

import contextlib
import gc
import threading
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from onebit.deploy import fileformat, floatconv
from onebit.deploy.bitconv import BinaryConvKernel, BitPlanes, unpack_signs
from onebit.deploy.exactness import ExactnessCheck
from onebit.deploy.kernels import get_kernel
from onebit.deploy.ops import FUNCTIONS, METHODS, batch_norm_affine
from onebit.deploy.pooling import avg_pool2d, max_pool2d, signed_max_pool2d

__all__ = ["OnebitModel", "load"]


class _Slot:
    """Where a node's value goes in a call's arguments."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name


def _has_slot(value) -> bool:
    if isinstance(value, _Slot):
        return True
    if isinstance(value, (list, tuple)):
        return any(_has_slot(v) for v in value)
    if isinstance(value, dict):
        return any(_has_slot(v) for v in value.values())
    return False


def _resolve(value, env: dict):
    if isinstance(value, _Slot):
        return env[value.name]
    if isinstance(value, list):
        return [_resolve(v, env) for v in value]
    if isinstance(value, tuple):
        return tuple(_resolve(v, env) for v in value)
    if isinstance(value, dict):
        return {k: _resolve(v, env) for k, v in value.items()}
    return value


def _binder(args: list, kwargs: dict) -> Callable[[dict], tuple[list, dict]]:
    """A fast ``env -> (args, kwargs)`` for decoded arguments with slots."""
    nested = any(_has_slot(a) and not isinstance(a, _Slot) for a in args) or _has_slot(kwargs)
    if nested:
        return lambda env: (_resolve(args, env), _resolve(kwargs, env))
    return lambda env: ([env[a.name] if isinstance(a, _Slot) else a for a in args], kwargs)


def _max_pool_of_batch_norm(x: torch.Tensor, affine: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """``max_pool2d(batch_norm_affine(x, affine), *args, **kwargs)``, pooled first (on 4x fewer
    values after a stride-2 pool). Exact: ``x * alpha + beta`` is rounded monotonically, so the
    window maximum of the normalised values is the normalised maximum of ``x`` (its minimum where
    ``alpha < 0``: ``-max_pool(-x)``); only an infinite input times ``alpha = 0`` (NaN) would differ."""
    if x.dim() != 4:
        return max_pool2d(batch_norm_affine(x, affine), *args, **kwargs)
    negative = affine[0] < 0
    return batch_norm_affine(signed_max_pool2d(x, negative if bool(negative.any()) else None, *args, **kwargs), affine)


_CHANNELS_LAST_EXACT = ExactnessCheck()  # (shapes, arguments, threads) -> same results as NCHW


def _channels_last_conv2d(x: torch.Tensor, weight: torch.Tensor, bias=None, stride=1, padding=0, dilation=1,
                          groups=1) -> torch.Tensor:
    """``F.conv2d`` with a channels-last result (for a max pool that reads NHWC and writes NCHW), where
    PyTorch's channels-last convolution gives the NCHW one's results bit for bit; else the NCHW one's.
    Checked once per shape, arguments and thread count on a random input: the rounding of a convolution
    depends on the algorithm PyTorch picks for them, not on the values (a ResNet stem's 3-channel conv:
    2-2.5x faster channels-last on x86 oneDNN, whose NCHW path computes blocked and reorders)."""
    if x.dim() != 4 or x.dtype != torch.float32 or weight.dtype != torch.float32:
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)
    key = (tuple(x.shape), tuple(weight.shape), bias is not None, repr((stride, padding, dilation, groups)),
           torch.get_num_threads())
    exact = _CHANNELS_LAST_EXACT(
        key, tuple(x.shape),
        lambda v: F.conv2d(v.contiguous(memory_format=torch.channels_last), weight, bias, stride, padding, dilation, groups),
        lambda v: F.conv2d(v, weight, bias, stride, padding, dilation, groups))
    if exact:
        x = x.contiguous(memory_format=torch.channels_last)
    return F.conv2d(x, weight, bias, stride, padding, dilation, groups)


def _conv_batch_norm(x: torch.Tensor, weight: torch.Tensor, bias, stride, padding, dilation, groups,
                     affine: torch.Tensor) -> torch.Tensor:
    """``batch_norm_affine(conv2d(x, ...), affine)`` (a downsampling shortcut's 1x1 conv and BN), in one pass
    on the kernels where that gives PyTorch's results (:mod:`onebit.deploy.floatconv`)."""
    return floatconv.conv2d(x, weight, bias, stride, padding, dilation, groups, affine, reference=lambda v: batch_norm_affine(
        F.conv2d(v, weight, bias, stride, padding, dilation, groups), affine))


def _conv_batch_norm_pool(x: torch.Tensor, weight: torch.Tensor, bias, stride, padding, dilation, groups,
                          affine: torch.Tensor, *pool) -> torch.Tensor:
    """``max_pool2d(batch_norm_affine(conv2d(x, ...), affine), *pool)`` (a ResNet stem), in one pass on the
    kernels where that gives PyTorch's results (:mod:`onebit.deploy.floatconv`)."""
    return floatconv.conv2d(x, weight, bias, stride, padding, dilation, groups, affine, pool, reference=lambda v: (
        _max_pool_of_batch_norm(_channels_last_conv2d(v, weight, bias, stride, padding, dilation, groups), affine, *pool)))


def _avg_pool_conv_batch_norm(x: torch.Tensor, weight: torch.Tensor, bias, stride, padding, dilation, groups,
                              affine: torch.Tensor, *avg_pool) -> torch.Tensor:
    """``batch_norm_affine(conv2d(avg_pool2d(x, *avg_pool), ...), affine)`` (a downsampling shortcut), in one pass
    on the kernels where that gives PyTorch's results (:mod:`onebit.deploy.floatconv`)."""
    return floatconv.conv2d(x, weight, bias, stride, padding, dilation, groups, affine, avg_pool=avg_pool,
                            reference=lambda v: batch_norm_affine(
                                F.conv2d(avg_pool2d(v, *avg_pool), weight, bias, stride, padding, dilation, groups), affine))


# built by _fuse, never read from a file
_FUSED = {"runtime.max_pool_of_batch_norm": _max_pool_of_batch_norm, "runtime.channels_last_conv2d": _channels_last_conv2d,
          "runtime.conv_batch_norm": _conv_batch_norm, "runtime.conv_batch_norm_pool": _conv_batch_norm_pool,
          "runtime.avg_pool_conv_batch_norm": _avg_pool_conv_batch_norm}


def _reads(node: dict) -> list[str]:
    """The values a node reads (with repeats): its inputs and the node references in its arguments."""
    names = list(node.get("inputs", []))

    def mark(value):
        if isinstance(value, dict):
            if set(value) == {"node"}:
                names.append(value["node"])
            for v in value.values():
                mark(v)
        elif isinstance(value, list):
            for v in value:
                mark(v)

    mark(node.get("args"))
    mark(node.get("kwargs"))
    return names


# Calls whose result is a new tensor (never a view of an argument): a binary conv may write its output
# over such a residual when nothing reads it afterwards.
_FRESH_CALLS = {
    "conv2d", "linear", "batch_norm", "onebit.batch_norm_affine", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d",
    "add", "sub", "mul", "truediv", "torch.add", "torch.sub", "torch.mul", "torch.cat", "onebit.add_channel",
    "onebit.rprelu", "onebit.learned_scale", "runtime.max_pool_of_batch_norm", "runtime.channels_last_conv2d",
    "runtime.conv_batch_norm", "runtime.conv_batch_norm_pool", "runtime.avg_pool_conv_batch_norm",
}


def _fresh(node: dict) -> bool:
    """Does the node's value live in its own new storage (a binary conv's buffer, or a fresh call)?"""
    if node["op"] == "binary_conv2d":
        return True
    kwargs, args = node.get("kwargs", {}), node.get("args") or []
    return (node["op"] == "call" and node.get("fn") in _FRESH_CALLS and not {"out", "inplace", "return_indices"} & set(kwargs)
            and not (node.get("fn") == "max_pool2d" and len(args) > 6 and args[6]))


def _fuse(nodes: list[dict]) -> list[dict]:
    """The graph with ``batch_norm_affine -> max_pool2d`` (the stem of a ResNet on ImageNet) as one
    pool-first step, where nothing else reads the normalised values; a ``conv2d`` read only by such a
    step or by a ``batch_norm_affine`` as one step with it, and an ``avg_pool2d`` read only by such a
    ``conv2d -> batch_norm_affine`` step (a downsampling shortcut) as one step with them; a ``conv2d``
    read only by a max pool computes channels-last (the pool reads NHWC and writes NCHW)."""
    nodes = _fuse_conv_batch_norm(_fuse_batch_norm_pool(nodes))
    counts = _read_counts(nodes)
    pooled = {node["args"][0]["node"] for node in nodes
              if node["op"] == "call" and node.get("fn") in ("max_pool2d", "runtime.max_pool_of_batch_norm")
              and node.get("args") and isinstance(node["args"][0], dict) and "node" in node["args"][0]}
    return [{**node, "fn": "runtime.channels_last_conv2d"}
            if node["op"] == "call" and node.get("fn") == "conv2d" and node["name"] in pooled and counts[node["name"]] == 1
            else node for node in nodes]


def _read_counts(nodes: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in nodes:
        for src in _reads(node):
            counts[src] = counts.get(src, 0) + 1
    return counts


_CONV2D_DEFAULTS = [None, 1, 0, 1, 1]  # bias, stride, padding, dilation, groups


def _fuse_batch_norm_pool(nodes: list[dict]) -> list[dict]:
    return _fold(nodes, {"max_pool2d": "runtime.max_pool_of_batch_norm"},
                 lambda bn, pool: (bn.get("fn") == "onebit.batch_norm_affine" and not bn.get("kwargs") and len(bn["args"]) == 2
                                   and not ((len(pool["args"]) > 6 and pool["args"][6])
                                            or pool.get("kwargs", {}).get("return_indices"))),
                 lambda bn, pool: [*bn["args"], *pool["args"][1:]])


def _fuse_conv_batch_norm(nodes: list[dict]) -> list[dict]:
    """``conv2d -> batch_norm_affine`` as ``runtime.conv_batch_norm`` (and that after an ``avg_pool2d`` as
    ``runtime.avg_pool_conv_batch_norm``), ``conv2d -> max_pool_of_batch_norm`` as ``runtime.conv_batch_norm_pool``."""
    nodes = _fold(nodes, {"onebit.batch_norm_affine": "runtime.conv_batch_norm",
                          "runtime.max_pool_of_batch_norm": "runtime.conv_batch_norm_pool"},
                  lambda conv, node: (conv.get("fn") == "conv2d" and not conv.get("kwargs") and not node.get("kwargs")
                                      and 2 <= len(conv.get("args") or []) <= 7),
                  lambda conv, node: [*conv["args"], *_CONV2D_DEFAULTS[len(conv["args"]) - 2:], *node["args"][1:]])
    return _fold(nodes, {"runtime.conv_batch_norm": "runtime.avg_pool_conv_batch_norm"},
                 lambda pool, node: pool.get("fn") == "avg_pool2d" and not pool.get("kwargs") and len(pool.get("args") or []) > 1,
                 lambda pool, node: [pool["args"][0], *node["args"][1:], *pool["args"][1:]])


def _fold(nodes: list[dict], consumers: dict[str, str], accepts: Callable[[dict, dict], bool],
          merged_args: Callable[[dict, dict], list]) -> list[dict]:
    """Each call whose fn is a key of ``consumers`` and whose first argument is a call that nothing else reads and
    that ``accepts(producer, consumer)``, as one call of ``consumers[fn]`` on ``merged_args(producer, consumer)`` in
    the consumer's place (its name and keyword arguments); the producer goes."""
    counts = _read_counts(nodes)
    by_name = {node["name"]: node for node in nodes}
    removed, replaced = set(), {}
    for node in nodes:
        args = node.get("args") or []
        if node["op"] != "call" or node.get("fn") not in consumers or not args or not isinstance(args[0], dict):
            continue
        producer = by_name.get(args[0].get("node"))
        if (producer is None or producer["op"] != "call" or counts.get(producer["name"]) != 1
                or not accepts(producer, node)):
            continue
        removed.add(producer["name"])
        replaced[node["name"]] = {**node, "fn": consumers[node["fn"]], "args": merged_args(producer, node)}
    return [replaced.get(node["name"], node) for node in nodes if node["name"] not in removed]


class _BinaryStep:
    """One ``binary_conv2d`` / ``binary_linear`` node."""

    def __init__(self, node: dict, tensor: Callable[[str], torch.Tensor], words: Callable[[str], np.ndarray]):
        a, self.name = node["attrs"], node["name"]
        t = {role: f"{self.name}.{role}" for role in node["tensors"]}  # stored as NAME.ROLE
        self.linear = node["op"] == "binary_linear"
        packed = words(t["weight"])  # [cout, kh, kw, words]
        cin = a["in_features"] if self.linear else a["in_channels"]
        groups = a.get("groups", 1)
        negative = unpack_signs(packed, cin // groups)
        if self.linear:
            self.kernel = BinaryConvKernel(negative, groups=1, zero_padding=False, reuse_planes=True)
        else:
            self.kernel = BinaryConvKernel(negative, stride=a["stride"], padding=a["padding"], groups=groups,
                                           zero_padding=a.get("pad_value", 0) == 0, reuse_planes=True)
        self.outputs: dict[tuple, torch.Tensor] = {}  # reused float outputs, per shape
        self.threshold = tensor(t["threshold"]) if "threshold" in t else None
        self.sample_mean = a.get("sample_mean_threshold", False)
        affine = tensor(t["affine"]) if "affine" in t else None  # [2, cout]: dot * mult + bias
        self.mult, self.bias = (affine[0], affine[1]) if affine is not None else (None, None)
        self.pre = tensor(t["pre"]) if "pre" in t else None  # [cout]: (dot * pre) * mult + bias, two roundings
        self.bits_for: str | None = a.get("bits_for")
        self.bits_threshold = tensor(t["bits_threshold"]) if "bits_threshold" in t else None
        self.bits_flip = tensor(t["bits_flip"]) if "bits_flip" in t else None
        self.bits_float_threshold = None
        if "bits_for" in a and "bits_threshold" not in node["tensors"]:  # bits from the float output
            self.bits_float_threshold = (tensor(t["bits_float_threshold"]) if "bits_float_threshold" in t
                                         else torch.zeros(packed.shape[0]))
        self.consumer: _BinaryStep | None = None  # resolved by the model
        self.in_place = False  # may write its output over its residual (set by the model)
        self.supplied: BitPlanes | None = None  # input bits written by the producer of this call

    def planes(self, x: Any, threads: int) -> BitPlanes:
        if self.supplied is not None:
            planes, self.supplied = self.supplied, None
            return planes
        if self.linear:
            # the batch becomes the positions of one 1 x C x N x 1 image (a GEMM of N rows), unless
            # each sample has its own threshold
            x4 = x[:, :, None, None] if self.sample_mean else x.t().contiguous()[None, :, :, None]
        else:
            x4 = x
        threshold = self.threshold
        if self.sample_mean:
            threshold = x.mean(tuple(range(1, x.dim())), keepdim=False)[:, None].expand(-1, x.shape[1])
        return self.kernel.binarize(x4, threshold, threads)

    def output_buffer(self, planes: BitPlanes) -> torch.Tensor | None:
        s = planes.shape
        shape = (s.n, s.cout, s.ho, s.wo)
        if shape not in self.outputs:
            self.outputs[shape] = torch.empty(shape)
        return self.outputs[shape]

    def output_over(self, planes: BitPlanes, residual: torch.Tensor | None) -> torch.Tensor:
        """Where the float output goes: over the residual if allowed and possible, else the own buffer."""
        if self.in_place and residual is not None and residual.dtype == torch.float32 and residual.is_contiguous():
            return residual
        return self.output_buffer(planes)

    def __call__(self, x: Any, residual: torch.Tensor | None, threads: int, planes: BitPlanes | None = None,
                 images: tuple[int, int] | None = None):
        """The layer on input ``x`` (or its ``planes``, if already made), on the images ``[first, last)``
        of the batch only if ``images`` is given (outputs: the whole batch's tensors)."""
        planes = planes if planes is not None else self.planes(x, threads)
        if self.consumer is None:
            out = self.kernel.run(planes, self.mult, self.bias, residual=residual, threads=threads,
                                  out=self.output_over(planes, residual), images=images, pre=self.pre)
            return _linear_output(out, self.sample_mean) if self.linear else out
        if self.bits_float_threshold is None:  # bits only (LCE): no float output
            self.consumer.supplied = self.kernel.run(planes, None, None, float_out=False, bits_for=self.consumer.kernel,
                                                     thresh=self.bits_threshold, flip=self.bits_flip, threads=threads,
                                                     images=images)
            return None
        out, self.consumer.supplied = self.kernel.run(planes, self.mult, self.bias, residual=residual,
                                                      bits_for=self.consumer.kernel, float_thresh=self.bits_float_threshold,
                                                      threads=threads, out=self.output_over(planes, residual),
                                                      images=images, pre=self.pre)
        return out


def _writes_words(producer: BinaryConvKernel, consumer: BinaryConvKernel) -> bool:
    """Can ``producer`` write ``consumer``'s input bits in channel words (whole words per task)?
    (Graph order: the producer's own layout is already settled.)"""
    return (producer.allow_words and (producer.groups == 1 or (producer.cout // producer.groups) % 64 == 0)
            and (consumer.groups == 1 or consumer.cg % 64 == 0))


def _linear_output(out: torch.Tensor, per_sample: bool) -> torch.Tensor:
    """[N, O, 1, 1] (per-sample layout) or [1, O, N, 1] (batch as positions) -> [N, O]."""
    return out[:, :, 0, 0] if per_sample else out[0, :, :, 0].t()


# Float calls that treat every sample of a batch alone (whatever their arguments but the checked ones)
_PER_SAMPLE_CALLS = {
    "conv2d", "linear", "onebit.batch_norm_affine", "onebit.add_channel", "onebit.rprelu", "onebit.learned_scale",
    "onebit.sign_threshold", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "adaptive_max_pool2d",
    "runtime.max_pool_of_batch_norm", "runtime.channels_last_conv2d", "runtime.conv_batch_norm",
    "runtime.conv_batch_norm_pool", "runtime.avg_pool_conv_batch_norm", "relu", "relu6", "hardtanh", "prelu",
    "leaky_relu", "gelu", "silu", "add", "sub", "mul", "truediv", "neg", "torch.add", "torch.sub", "torch.mul",
    "torch.sigmoid", "torch.tanh", "torch.relu", "torch.clamp", "torch.where", "onebit.thermometer",
    "onebit.sign_step", "onebit.level_step", "onebit.fixed_point",
}


def _mixes_samples(node: dict) -> bool:
    """Might this node combine or reorder the samples of a batch? (conservative: unknown means yes)"""
    op, fn, args = node["op"], node.get("fn"), node.get("args") or []
    if op in ("input", "output", "constant", "binary_conv2d", "binary_linear"):
        return False
    dim = node.get("kwargs", {}).get("dim", args[1] if len(args) > 1 else None)
    if op == "method":
        return not (fn in ("contiguous", "float", "relu", "sigmoid") or (fn == "flatten" and isinstance(dim, int) and dim >= 1))
    if fn in _PER_SAMPLE_CALLS:
        return False
    if fn in ("torch.flatten", "torch.cat", "softmax"):  # start_dim / dim: not the batch
        return not (isinstance(dim, int) and dim != 0 and (dim > 0 or fn == "softmax"))
    if fn == "pad":  # at most the last three dims: not the batch of NCHW activations
        pad = args[1].get("tuple") if len(args) > 1 and isinstance(args[1], dict) else None
        return not (isinstance(pad, list) and len(pad) <= 6)
    if fn == "getitem":  # x[:, ...]
        index = args[1] if len(args) > 1 else None
        first = index["tuple"][0] if isinstance(index, dict) and "tuple" in index else None
        return first != {"slice": [None, None, None]}
    return True


class OnebitModel:
    """An exported model ready to run. ``threads``: threads of the kernels and of PyTorch's ops
    during a call (default: ``torch.get_num_threads()`` at each call).

    ``batch_chunk``: run a larger batch as chunks of this many samples, one after the other, so that
    each chunk's activations stay in the CPU caches (for 224x224 images a batch of 8 runs ~20% faster per
    image as 8 chunks of 1 on a 2 MB-L2 core). Only for graphs whose samples are independent (checked at
    load). PyTorch's float ops may round differently at another batch size, so the logits are those of
    PyTorch on the same chunks, not always bit for bit those of PyTorch on the whole batch (hence off by
    default)."""

    def __init__(self, graph: dict, tensors: dict[str, np.ndarray], threads: int | None = None,
                 batch_chunk: int | None = None):
        self.info = graph.get("model", {})
        self.threads = threads
        if batch_chunk is not None and batch_chunk < 1:
            raise ValueError(f"batch_chunk must be a positive number of samples, got {batch_chunk}")
        self.batch_chunk = batch_chunk
        self._lock = threading.Lock()
        self._arrays = tensors
        self._torch: dict[str, torch.Tensor] = {}
        self._steps: list[tuple[str, Callable[[dict, int], Any]]] = []
        self._layers: dict[int, tuple[_BinaryStep, str, str | None]] = {}  # step index -> binary conv, input, residual
        self._input: str | None = None
        self._output: str | None = None
        binary: dict[str, _BinaryStep] = {}
        nodes = _fuse(graph["nodes"])
        for node in nodes:
            self._compile(node, binary)
        self._binary = list(binary.values())
        for step in binary.values():
            if step.bits_for is not None:
                if step.bits_for not in binary:
                    raise ValueError(f"corrupt graph: {step.name} writes bits for unknown node {step.bits_for!r}")
                step.consumer = binary[step.bits_for]
                step.consumer.kernel.allow_words &= _writes_words(step.kernel, step.consumer.kernel)
        if self._input is None or self._output is None:
            raise ValueError("corrupt graph: no input or output node")
        self._last_use = self._lifetimes(nodes)
        self._write_over_residuals(nodes)
        self._chains = self._image_chains()
        self._graph_nodes = graph["nodes"]
        self._nodes = nodes  # as run (after _fuse)
        mixing = next((node for node in nodes if _mixes_samples(node)), None)
        if batch_chunk is not None and mixing is not None:
            raise ValueError(f"batch_chunk needs a graph whose samples are independent; node {mixing['name']} "
                             f"({mixing.get('fn', mixing['op'])}) may mix them")

    # ------------------------------------------------------------------ building
    def _tensor(self, key: str) -> torch.Tensor:
        if key not in self._torch:
            if key not in self._arrays:
                raise ValueError(f"corrupt file: missing tensor {key!r}")
            self._torch[key] = torch.from_numpy(np.array(self._arrays[key]))
        return self._torch[key]

    def _words(self, key: str) -> np.ndarray:
        if key not in self._arrays:
            raise ValueError(f"corrupt file: missing tensor {key!r}")
        return self._arrays[key]

    def _decode(self, value):
        return fileformat.decode_arg(value, _Slot, self._tensor)

    def _decode_kwargs(self, node: dict) -> dict:
        return {k: self._decode(v) for k, v in node.get("kwargs", {}).items()}

    def _compile(self, node: dict, binary: dict) -> None:
        op, name = node["op"], node["name"]
        if op == "input":
            self._input = name
            return
        if op == "output":
            self._output = node["inputs"][0]
            return
        if op == "constant":
            value = self._tensor(node["tensor"])
            self._steps.append((name, lambda env, th: value))
        elif op == "call":
            functions = _FUSED if node["fn"] in _FUSED else FUNCTIONS
            if node["fn"] not in functions:
                raise ValueError(f"unsupported operation {node['fn']!r} in the graph (node {name}); newer onebit file?")
            fn, bind = functions[node["fn"]], _binder(self._decode(node["args"]), self._decode_kwargs(node))

            def call(env, th, fn=fn, bind=bind):
                args, kwargs = bind(env)
                return fn(*args, **kwargs)

            self._steps.append((name, call))
        elif op == "method":
            if node["fn"] not in METHODS:
                raise ValueError(f"unsupported tensor method {node['fn']!r} in the graph (node {name})")
            method, bind = node["fn"], _binder(self._decode(node["args"]), self._decode_kwargs(node))

            def call_method(env, th, method=method, bind=bind):
                args, kwargs = bind(env)
                return getattr(args[0], method)(*args[1:], **kwargs)

            self._steps.append((name, call_method))
        elif op in ("binary_conv2d", "binary_linear"):
            step = binary[name] = _BinaryStep(node, self._tensor, self._words)
            src, res = node["inputs"][0], node["inputs"][1] if len(node["inputs"]) > 1 else None
            self._layers[len(self._steps)] = (step, src, res)
            self._steps.append((name, lambda env, th: step(env[src], env[res] if res else None, th)))
        else:
            raise ValueError(f"unknown node kind {op!r} in the graph (node {name}); newer onebit file?")

    def _lifetimes(self, nodes: list[dict]) -> list[list[str]]:
        """For each step, the values no later step reads (freed right after it)."""
        reads: dict[str, int] = {}
        index = {name: i for i, (name, _) in enumerate(self._steps)}
        for node in nodes:
            at = index.get(node["name"], len(self._steps))
            for src in _reads(node):
                reads[src] = max(reads.get(src, -1), at)
        free: list[list[str]] = [[] for _ in self._steps]
        for value, last in reads.items():
            if last < len(self._steps) and value != self._output:
                free[last].append(value)
        return free

    def _write_over_residuals(self, nodes: list[dict]) -> None:
        """Let a binary conv write its output over its residual where that is the residual's last
        read, and the residual is fresh storage read only by steps that make fresh storage (so no
        view of it survives): one float buffer less to stream through the caches per layer."""
        by_name = {node["name"]: node for node in nodes}
        readers: dict[str, list[dict]] = {}
        for node in nodes:
            for src in set(_reads(node)):
                readers.setdefault(src, []).append(node)
        index = {name: i for i, (name, _) in enumerate(self._steps)}
        binary = {step.name: step for step in self._binary}
        for node in nodes:
            inputs = node.get("inputs", [])
            if node["op"] != "binary_conv2d" or len(inputs) < 2:
                continue
            res = by_name.get(inputs[1])
            if (res is not None and res["name"] in self._last_use[index[node["name"]]] and _fresh(res)
                    and all(_fresh(r) for r in readers[res["name"]])):
                binary[node["name"]].in_place = True

    def _image_chains(self) -> dict[int, int]:
        """Runs of binary convolutions that may go image by image: step index -> end of its run. In a
        run each conv after the first reads the bits its predecessor writes for it, so every value
        the run makes is per image (the convolutions are integer: the same values in any order)."""
        chains, i = {}, 0
        while i < len(self._steps):
            end = i + 1
            if i in self._layers and not self._layers[i][0].linear:
                while end in self._layers and self._layers[end - 1][0].consumer is self._layers[end][0]:
                    end += 1
            if end > i + 1:
                chains[i] = end
            i = end
        return chains

    def _run_by_image(self, start: int, end: int, env: dict, threads: int) -> None:
        """Steps ``[start, end)`` (a chain of binary convs) on one image after the other, so that an
        image's activations stay in the CPU caches from layer to layer."""
        first, src, res = self._layers[start]
        planes = first.planes(env[src], threads)  # the whole batch's input bits
        for image in range(planes.shape.n):
            for k in range(start, end):
                step, src, res = self._layers[k]
                out = step(None, env[res] if res else None, threads, planes=planes if k == start else None,
                           images=(image, image + 1))
                if image == 0:
                    env[self._steps[k][0]] = out

    # ------------------------------------------------------------------ running
    @torch.no_grad()
    def __call__(self, x):
        as_numpy = isinstance(x, np.ndarray)
        x = torch.from_numpy(np.ascontiguousarray(x)) if as_numpy else x
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"expected a NumPy array or a torch tensor, got {type(x).__name__}")
        x = x.detach().to("cpu", torch.float32).contiguous()
        channels = self.info.get("in_channels")
        if channels is not None and (x.dim() != 4 or x.shape[1] != channels):
            raise ValueError(f"expected an N x {channels} x H x W float input, got shape {tuple(x.shape)}")
        with self._lock, _no_gc():
            threads = self.threads or torch.get_num_threads()
            previous = torch.get_num_threads()
            if threads != previous:
                torch.set_num_threads(threads)
            try:
                chunk = self.batch_chunk
                if chunk and x.dim() > 0 and x.shape[0] > chunk:
                    out = torch.cat([self._run(part, threads) for part in x.split(chunk)])
                else:
                    out = self._run(x, threads)
                    if isinstance(out, torch.Tensor) and self._owns(out):  # the next call would overwrite it
                        out = out.clone()
            finally:
                for step in self._binary:  # after an error, no bits are left for the next call
                    step.supplied = None
                if threads != previous:
                    torch.set_num_threads(previous)
        return out.numpy() if as_numpy else out

    def _run(self, x: torch.Tensor, threads: int):
        env, i = {self._input: x}, 0
        by_image = x.dim() > 0 and x.shape[0] > 1
        while i < len(self._steps):
            end = self._chains.get(i, i + 1) if by_image else i + 1
            if end > i + 1:
                self._run_by_image(i, end, env, threads)
            else:
                name, step = self._steps[i]
                env[name] = step(env, threads)
            for free in self._last_use[i:end]:
                for value in free:
                    env.pop(value, None)
            i = end
        return env[self._output]

    @torch.no_grad()
    def intermediates(self, x: torch.Tensor) -> dict[str, Any]:
        """Every node's value on the float NCHW input ``x``, by node name, for checking a file layer by
        layer (e.g. against golden vectors); None for a binary layer that only wrote the next one's bits."""
        values = {self._input: x.detach().to("cpu", torch.float32).contiguous()}
        env = dict(values)
        with self._lock, _no_gc():
            threads = self.threads or torch.get_num_threads()
            try:
                for name, step in self._steps:
                    env[name] = step(env, threads)
                    values[name] = env[name].clone() if isinstance(env[name], torch.Tensor) else env[name]
            finally:
                for step in self._binary:
                    step.supplied = None
        return values

    def _owns(self, t: torch.Tensor) -> bool:
        ptr = t.untyped_storage().data_ptr()
        return any(buf.untyped_storage().data_ptr() == ptr for step in self._binary for buf in step.outputs.values())

    def summary(self) -> str:
        """What runs where: binary layers on the kernels (and those exchanging bits), float steps."""
        nodes = self._graph_nodes
        binary = [n for n in nodes if n["op"] in ("binary_conv2d", "binary_linear")]
        bits = sum("bits_for" in n["attrs"] for n in binary)
        fallback = sum(bool(n.get("float_binary_layer")) for n in nodes)
        steps = sum("step_of" in n or n.get("fn") == "onebit.thermometer" for n in nodes)
        floats = sum(n["op"] in ("call", "method") for n in nodes) - steps
        lines = [f"{len(binary)} binary layers on the {get_kernel()} kernels ({bits} write bit-packed outputs "
                 f"for the next one), {floats} float steps on PyTorch"]
        convs = sum(n.get("fn") in ("runtime.conv_batch_norm", "runtime.conv_batch_norm_pool", "runtime.avg_pool_conv_batch_norm")
                    for n in self._nodes)
        if convs:
            lines[0] += (f"; {convs} float convs among them, with the BatchNorm (and max pool) after them, on the kernels "
                         "where that gives PyTorch's results")
        if steps:
            lines.append(f"{steps} integer steps (input encoding, thresholds and fixed-point residuals on accumulators)")
        if fallback:
            lines.append(f"{fallback} binary layers run as float computations (one side real, or a geometry "
                         "the kernels do not cover)")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"OnebitModel({self.info.get('name', '?')}, {len(self._steps)} steps)"


@contextlib.contextmanager
def _no_gc():
    """No cyclic garbage collection during a call (its objects are freed by reference counting);
    full collections over PyTorch's many objects would otherwise cost ~5% of a call."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def load(path: str | Path, threads: int | None = None, batch_chunk: int | None = None) -> OnebitModel:
    """Load an exported ``.onebit`` file (no pickle); see :class:`OnebitModel` for the options."""
    graph, tensors = fileformat.read(path)
    return OnebitModel(graph, tensors, threads, batch_chunk)
