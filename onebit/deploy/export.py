"""Export a PyTorch model to a ``.onebit`` file: trace, fold, bit-pack.

The eval-mode model is traced with ``torch.fx`` (binary layers, quantizers and the zoo's small
real-valued modules are leaves) and shape-propagated on the example input. Then, following the
Larq Compute Engine's design:

* every binary conv/linear whose two sides are 1-bit becomes a ``binary_conv2d``/``binary_linear``
  node: weights packed 64 per word, the weight scale, conv bias, a channel output scale and a
  following BatchNorm folded into one per-channel multiply/add, a following residual ``+`` fused;
* when its (folded, activated) output feeds only the next binary convolution, the node writes
  that convolution's bits directly through per-channel integer thresholds on the dot product,
  found by evaluating the exact float chain (BN, activation, next sign) on every possible dot
  product; non-monotone chains keep float outputs;
* every other layer is stored in float32 and runs on the same PyTorch op as in the model
  (:mod:`onebit.deploy.ops`); float BatchNorms are not folded into float convolutions, so
  that the signs taken downstream see bit-identical values. Binary layers the kernels cannot
  run (one side real, dilation, a padding value other than 0 / +1) are exported as their
  exact float computation.
"""
from __future__ import annotations

import operator
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.fx
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from onebit.deploy import fileformat
from onebit.deploy.bitconv import pack_signs
from onebit.deploy.kernels import constant
from onebit.deploy.ops import METHODS, function_name
from onebit.deploy.quantizers import ActivationSign, ExportError, activation_sign, weight_signs
from onebit.layers import BinaryConv2d, BinaryLinear, FixedPoint, ThermometerEncoding
from onebit.layers.activations import LearnableBias, RPReLU
from onebit.quant.scale import LearnedScale
from onebit.quant.base import Quantizer

__all__ = ["Program", "build_program", "export"]

BINARY = (BinaryConv2d, BinaryLinear)
# real-valued per-channel modules that may sit between a binary conv and the next one's sign
ELEMENTWISE = (nn.BatchNorm2d, nn.Hardtanh, nn.ReLU, nn.ReLU6, nn.PReLU, nn.LeakyReLU, RPReLU, LearnableBias,
               nn.Identity, nn.Dropout)
IDENTITY = (nn.Identity, nn.Dropout, nn.Dropout2d)


class _Tracer(torch.fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, (*BINARY, Quantizer, LearnableBias, RPReLU, LearnedScale, ThermometerEncoding,
                                  FixedPoint)) \
            or super().is_leaf_module(m, qualname)


@dataclass
class Program:
    """An exported graph in memory: JSON-able nodes and named arrays."""

    nodes: list[dict] = field(default_factory=list)
    tensors: dict[str, np.ndarray] = field(default_factory=dict)
    model: dict = field(default_factory=dict)
    check: dict | None = None
    """After :func:`export` with ``check=True``: the file against the model on the example input."""

    def graph(self) -> dict:
        return {"model": self.model, "nodes": self.nodes}


@dataclass
class _BinaryLayer:
    """What the kernels need to know about one binary layer."""

    module: nn.Module
    act: ActivationSign
    negative: np.ndarray  # [cout, cin/groups, kh, kw] bool
    scale: np.ndarray | None  # [cout] float64 weight scale


def _f64(t) -> np.ndarray:
    return t.detach().double().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t, dtype=np.float64)


@torch.no_grad()
def _bn_affine(bn: nn.modules.batchnorm._BatchNorm) -> tuple[np.ndarray, np.ndarray]:
    """Eval-mode BatchNorm as ``y = x * alpha + beta`` with the float32 ``alpha``, ``beta`` PyTorch's
    CPU kernel uses (``alpha = w / sqrt(var + eps)`` in float32; ``beta`` is read from the module
    itself, ``bn(0)``, whatever rounding its kernel applies), so that the runtime reproduces the
    module's outputs bit for bit on the same inputs."""
    if bn.running_mean is None or bn.running_var is None:
        raise ExportError(f"cannot export {bn}: BatchNorm without running statistics (track_running_stats=False)")
    f32 = np.float32
    invstd = f32(1) / np.sqrt(bn.running_var.detach().cpu().numpy() + f32(bn.eps))
    alpha = invstd * (bn.weight.detach().cpu().numpy() if bn.weight is not None else f32(1))
    was = bn.training
    bn.eval()
    beta = bn(torch.zeros((1, bn.num_features, 1, 1) if isinstance(bn, nn.BatchNorm2d) else (1, bn.num_features))).flatten()
    bn.train(was)
    return alpha.astype(f32), beta.numpy().astype(f32)


class _Builder:
    def __init__(self, model: nn.Module, example_input: torch.Tensor):
        self.model = model
        try:
            self.gm = torch.fx.GraphModule(model, _Tracer().trace(model))
        except Exception as e:  # noqa: BLE001 - tracing errors come in many types
            raise ExportError(f"cannot trace {type(model).__name__} with torch.fx ({type(e).__name__}: {e})") from e
        with torch.no_grad():
            ShapeProp(self.gm).propagate(example_input)
        self.modules = dict(self.gm.named_modules())
        self.program = Program()
        self.names: dict[torch.fx.Node, str] = {}
        self.skip: set[torch.fx.Node] = set()
        self.fused: dict[torch.fx.Node, dict] = {}  # last node of a fused chain -> its IR node
        self.layers: dict[torch.fx.Node, _BinaryLayer | None] = {}
        self.grid_values: dict[torch.fx.Node, int] = {}  # level steps' outputs -> their grid's levels

    # ------------------------------------------------------------------ helpers
    def module(self, node: torch.fx.Node) -> nn.Module | None:
        return self.modules.get(node.target) if node.op == "call_module" else None

    @staticmethod
    def shape(node) -> tuple[int, ...] | None:
        meta = node.meta.get("tensor_meta") if isinstance(node, torch.fx.Node) else None
        return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None

    def tensor(self, key: str, value) -> str:
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu()
            value = value.float().numpy() if value.is_floating_point() else value.numpy()
        self.program.tensors[key] = np.ascontiguousarray(value)
        return key

    def encode(self, value, key_prefix: str):
        counter = iter(range(1 << 30))

        def node_name(v):
            if isinstance(v, _Ref):
                return v.name
            return self.names[v] if isinstance(v, torch.fx.Node) else None

        def tensor_key(t):
            return self.tensor(f"{key_prefix}.{next(counter)}", t)

        return fileformat.encode_arg(value, node_name, tensor_key)

    def encode_kwargs(self, kwargs: dict, key_prefix: str) -> dict:
        return {k: self.encode(v, f"{key_prefix}.{k}") for k, v in kwargs.items()}

    @staticmethod
    def without_empty_kwargs(ir: dict) -> dict:
        if ir.get("kwargs") == {}:
            del ir["kwargs"]
        return ir

    def only_user(self, node: torch.fx.Node) -> torch.fx.Node | None:
        """The single user of ``node`` if it is not already part of a fusion."""
        user = next(iter(node.users)) if len(node.users) == 1 else None
        return None if user in self.skip or user in self.fused else user

    # ------------------------------------------------------------------ binary layers
    def binary_layer(self, node: torch.fx.Node) -> _BinaryLayer | None:
        """The kernel view of a binary layer node, or None if the kernels cannot run it."""
        if node in self.layers:
            return self.layers[node]
        m = self.module(node)
        layer = None
        if isinstance(m, BINARY) and m.input_bits == 1 and m.weight_bits == 1 and self._kernel_geometry(node, m):
            conv = isinstance(m, BinaryConv2d)
            act = activation_sign(m.input_quantizer, m.in_channels if conv else m.in_features, spatial=conv)
            negative, scale = weight_signs(m)
            negative = negative.cpu().numpy()
            layer = _BinaryLayer(m, act, negative if conv else negative[:, :, None, None],
                                 None if scale is None else _f64(scale))
        self.layers[node] = layer
        return layer

    def _kernel_geometry(self, node, m) -> bool:
        if isinstance(m, BinaryLinear):
            shape = self.shape(node.args[0])
            return shape is not None and len(shape) == 2 and m.in_features <= constant("max_dot_length") and self._channel_scale(m)
        k = m.kernel_size[0] * m.kernel_size[1] * m.in_channels // m.groups
        return (
            m.dilation == (1, 1) and m.padding_mode == "zeros" and isinstance(m.padding, tuple)
            and (m.pad_value in (0.0, 1.0) or not any(m.padding))
            and max(m.kernel_size) <= constant("max_kernel_side") and k <= constant("max_dot_length") and self._channel_scale(m)
        )

    @staticmethod
    def _channel_scale(m) -> bool:
        return m.output_scale is None or (isinstance(m.output_scale, LearnedScale) and not hasattr(m.output_scale, "row"))

    def plan_binary(self, node: torch.fx.Node) -> None:
        """Decide what a kernel-path binary layer absorbs; its IR node (named after the layer) is
        emitted where the chain ends."""
        layer = self.binary_layer(node)
        m, key = layer.module, node.name
        conv = isinstance(m, BinaryConv2d)
        chain, bn, residual, bits = [node], None, None, None
        user = self.only_user(node)
        if user is not None and isinstance(self.module(user), nn.BatchNorm2d if conv else nn.BatchNorm1d):
            bn = self.module(user)
            chain.append(user)
        user = self.only_user(chain[-1])
        if conv and user is not None and self._is_residual_add(user, chain[-1]):
            residual = next(a for a in user.args if a is not chain[-1])
            chain.append(user)
        if conv and residual is None:
            bits = self._bits_consumer(layer, chain[-1], bn)
        direct = self._direct_consumer(layer, chain[-1]) if conv and bits is None else None
        step = None
        if conv and bn is None and bits is None and direct is None:
            step = self._sign_step(layer, node) or self._level_step(layer, node)
        roles = []  # tensors stored under NAME.ROLE

        def store(role, value):
            self.tensor(f"{key}.{role}", value)
            roles.append(role)

        store("weight", pack_signs(layer.negative))
        if layer.act.threshold is not None:
            store("threshold", layer.act.threshold)
        attrs = self._binary_attrs(layer)
        if step is not None:  # the output is the accumulator (times +-1), the tail a sign_step node
            store("affine", np.stack([step.sigma, np.zeros_like(step.sigma)]))
            self.emit_step(key, step)
        elif bits is None:
            pre, mult, bias = self._folded_affine(layer, bn)
            store("affine", np.stack([mult, bias]))
            if pre is not None:
                store("pre", pre)
        if direct is not None:  # float output, and the next conv's bits from it
            consumer, threshold = direct
            attrs["bits_for"] = consumer.name
            if threshold is not None:
                store("bits_float_threshold", threshold)
        if bits is not None:  # bits only
            consumer, post, thresh, flip = bits
            chain += post
            attrs["bits_for"] = consumer.name
            store("bits_threshold", thresh)
            store("bits_flip", flip)
        inputs = [node.args[0]] + ([residual] if residual is not None else [])
        op = "binary_conv2d" if conv else "binary_linear"
        self.skip.update(chain[:-1])
        self.fused[chain[-1]] = lambda: {"name": key, "op": op, "inputs": [self.names[i] for i in inputs],
                                         "attrs": attrs, "tensors": roles}

    # ------------------------------------------------------------------ sign steps (fully binary tails)
    def _sign_step(self, layer: _BinaryLayer, node: torch.fx.Node) -> "_Step | None":
        """The tail of a binary conv that only feeds signs, as integer thresholds on its accumulator:
        ``[max pool] -> per-channel monotone modules``, every reader of the result taking its sign
        (a 1-bit quantizer or binary layer with threshold 0)."""
        pool, modules, absorbed, cur = None, [], [], node
        user = self.only_user(cur)
        if (user is not None and type(self.module(user)) is nn.MaxPool2d and len(user.args) == 1
                and not self.module(user).return_indices):
            pool = cur = user
        while (user := self.only_user(cur)) is not None:
            um = self.module(user)
            if not (isinstance(um, ELEMENTWISE) and len(user.args) == 1 and user.args[0] is cur):
                break
            modules.append(um)
            absorbed.append(user)
            cur = user
        if not absorbed or not self._only_signs_read(cur):
            return None
        found = _sign_thresholds(layer, layer.negative[0].size, modules)
        if found is None:
            return None
        sigma, thresholds, flip = found
        return _Step("onebit.sign_step", pool or node, absorbed, sigma, {"step_threshold": thresholds, "step_flip": flip})

    def _level_step(self, layer: _BinaryLayer, node: torch.fx.Node) -> "_Step | None":
        """The tail of a binary conv on a fixed-point residual stream, as an integer table on its
        accumulator: ``per-channel modules -> FixedPoint [-> + residual on the same grid] [-> Hardtanh]``
        (a clamp to grid points)."""
        pre, grid, residual, clamp, absorbed, cur = [], None, None, None, [], node
        while (user := self.only_user(cur)) is not None:
            um = self.module(user)
            single = len(user.args) == 1 and user.args[0] is cur
            if grid is None and single and isinstance(um, ELEMENTWISE):
                pre.append(um)
            elif grid is None and single and isinstance(um, FixedPoint):
                grid = um
            elif grid is not None and residual is None and clamp is None and self._is_residual_add(user, cur):
                residual = next(a for a in user.args if a is not cur)
                if not self._on_grid(residual, grid.levels):
                    return None
            elif grid is not None and clamp is None and single and type(um) is nn.Hardtanh:
                clamp = [um.min_val * grid.levels, um.max_val * grid.levels]
                if any(v != int(v) for v in clamp):
                    return None
                clamp = [int(v) for v in clamp]
            elif not (single and isinstance(um, IDENTITY)):
                break
            absorbed.append(user)
            cur = user
        if grid is None:
            return None
        sigma, base, thresholds = _level_table(layer, layer.negative[0].size, pre, grid, clamp if residual is not None else None)
        self.grid_values[cur] = grid.levels
        return _Step("onebit.level_step", node, absorbed, sigma, {"step_base": base, "step_threshold": thresholds},
                     [grid.levels, *(clamp or [None, None])], residual)

    def _on_grid(self, node, levels: int) -> bool:
        """Is ``node``'s value a level step's output on the ``1/levels`` grid (maybe subsampled or zero-padded)?"""
        while isinstance(node, torch.fx.Node):
            if self.grid_values.get(node) == levels:
                return True
            if not self._passes_values(node):
                return False
            node = node.args[0]
        return False

    def _passes_values(self, node: torch.fx.Node) -> bool:
        """Does ``node`` only move, subsample or zero-pad its first argument's values?"""
        if isinstance(self.module(node), IDENTITY) or (node.op == "call_function" and node.target is operator.getitem):
            return True
        return (node.op == "call_function" and function_name(node.target) == "pad" and len(node.args) == 2
                and node.kwargs.get("mode", "constant") == "constant" and node.kwargs.get("value") in (None, 0, 0.0))

    def emit_step(self, key: str, step: "_Step") -> None:
        """Skip the absorbed modules; their last one becomes the step's call (``step_of``: the conv)."""
        self.skip.update(step.absorbed[:-1])
        tensors = [{"tensor": self.tensor(f"{key}.{role}", value)} for role, value in step.tensors.items()]
        last = step.absorbed[-1]

        def emit():
            args = [{"node": self.names[step.source]}, *tensors, *step.args]
            if step.residual is not None:
                args.append({"node": self.names[step.residual]})
            return {"name": last.name, "op": "call", "fn": step.fn, "args": args, "step_of": key}

        self.fused[last] = emit

    def _zero_sign(self, q: nn.Module, source: torch.fx.Node) -> bool:
        """Is ``q`` (applied to ``source``) a 1-bit ``sign(x)`` with threshold 0?"""
        shape = self.shape(source)
        if q is None or shape is None:
            return False
        try:
            act = activation_sign(q, shape[1], spatial=len(shape) == 4)
        except ExportError:
            return False
        return act.threshold is None and not act.sample_mean

    def _only_signs_read(self, node: torch.fx.Node) -> bool:
        """Does every reader of ``node`` (through identities and flattens) only take its sign?"""
        readers = self._readers(node)
        for user, source in readers:
            m = self.module(user)
            if (user.op == "call_method" and user.target == "flatten") or (user.op == "call_function" and user.target is torch.flatten):
                if user.args[0] is not source or not self._only_signs_read(user):
                    return False
                continue
            q = m.input_quantizer if isinstance(m, BINARY) else m if isinstance(m, Quantizer) else None
            if len(user.args) != 1 or user.args[0] is not source or not self._zero_sign(q, source):
                return False
        return bool(readers)

    def _binary_attrs(self, layer: _BinaryLayer) -> dict:
        m = layer.module
        if isinstance(m, BinaryLinear):
            attrs = {"in_features": m.in_features}
        else:  # output channels and kernel size are the weight's shape; groups 1 and pad value 0 are defaults
            attrs = {"in_channels": m.in_channels, "stride": list(m.stride), "padding": list(m.padding)}
            if m.groups != 1:
                attrs["groups"] = m.groups
            if any(m.padding) and m.pad_value == 1.0:
                attrs["pad_value"] = 1
        if layer.act.sample_mean:
            attrs["sample_mean_threshold"] = True
        return attrs

    def _is_residual_add(self, user: torch.fx.Node, value: torch.fx.Node) -> bool:
        if user.op != "call_function" or user.target not in (operator.add, torch.add) or user.kwargs or len(user.args) != 2:
            return False
        other = next((a for a in user.args if a is not value), None)
        return (isinstance(other, torch.fx.Node) and other is not value and self.shape(other) == self.shape(value)
                and self.shape(user) == self.shape(value))

    def _folded_affine(self, layer: _BinaryLayer, bn) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
        """float32 ``(pre, mult, bias)`` with ``fma(dot * pre, mult, bias)`` = bn(output_scale(scale * dot + conv bias))
        (``pre`` None: 1, ``dot * pre`` rounded to float32).

        Without conv bias and output scale this is exactly PyTorch's arithmetic on the conv output: the
        BN's ``fma(y, alpha, beta)`` of ``y = dot * gain``, the weight quantizer's output gain (RBNN's per-channel
        scale) rounded first as PyTorch multiplies it (``pre``), or of ``scale * dot``, exact for a scale of 1 or a
        power of two; otherwise the terms are folded in float64 and rounded once."""
        m = layer.module
        cout = layer.negative.shape[0]
        scale = layer.scale if layer.scale is not None else np.ones(cout)
        if bn is not None and m.bias is None and m.output_scale is None:
            alpha, beta = _bn_affine(bn)
            if layer.scale is not None and m.output_gain() is not None:
                return scale.astype(np.float32), alpha, beta
            return None, scale.astype(np.float32) * alpha, beta
        mult, bias = scale.copy(), _f64(m.bias) if m.bias is not None else np.zeros(cout)
        if m.output_scale is not None:
            s = _f64(m.output_scale.channel).reshape(cout)
            mult, bias = mult * s, bias * s
        if bn is not None:
            alpha, beta = _bn_affine(bn)
            mult, bias = mult * alpha, bias * alpha + beta
        return None, mult.astype(np.float32), bias.astype(np.float32)

    def _bits_consumer(self, layer: _BinaryLayer, node: torch.fx.Node, bn):
        """(consumer node, absorbed elementwise nodes, int thresholds, flips) when the layer's output
        ``node`` only feeds the next binary conv's sign through per-channel monotone modules."""
        m = layer.module
        post = []
        while True:
            user = self.only_user(node)
            if user is None:
                return None
            um = self.module(user)
            if isinstance(um, ELEMENTWISE) and user.args[0] is node and len(user.args) == 1:
                post.append(user)
                node = user
                continue
            break
        consumer = self.binary_layer(user) if isinstance(um, BinaryConv2d) and user.args[0] is node else None
        if consumer is None or consumer.act.sample_mean:
            return None
        if not (m.groups == 1 or (m.out_channels // m.groups) % 4 == 0):
            return None
        if not (um.groups == 1 or (um.in_channels // um.groups) % 4 == 0):
            return None
        k = layer.negative[0].size  # cin/groups * kh * kw
        modules = ([bn] if bn is not None else []) + [self.module(p) for p in post]
        thresholds = _step_thresholds(layer, k, modules, consumer.act)
        if thresholds is None:
            return None
        return (user, post, *thresholds)

    # ------------------------------------------------------------------ float nodes
    def _readers(self, node: torch.fx.Node) -> list[tuple[torch.fx.Node, torch.fx.Node]]:
        """``(user, node it reads)`` for every user of ``node``'s value, looking through identities."""
        found = []
        for user in node.users:
            if isinstance(self.module(user), IDENTITY):
                found += self._readers(user)
            else:
                found.append((user, node))
        return found

    def _direct_consumer(self, layer: _BinaryLayer, node: torch.fx.Node):
        """(binary conv, its thresholds) among the users of ``node`` that binarize it as it is, so
        that the producer can write that conv's bits along with its float output."""
        m = layer.module
        if not (m.groups == 1 or (m.out_channels // m.groups) % 4 == 0):
            return None
        for user, source in self._readers(node):
            um = self.module(user)
            if not (isinstance(um, BinaryConv2d) and user.args[0] is source and user not in self.skip):
                continue
            consumer = self.binary_layer(user)
            if consumer is None or consumer.act.sample_mean or not (um.groups == 1 or (um.in_channels // um.groups) % 4 == 0):
                continue
            t = consumer.act.threshold
            return user, None if t is None else t.numpy().astype(np.float32)
        return None

    def emit_float(self, node: torch.fx.Node) -> dict | list[dict]:
        op, name = node.op, node.name
        if op == "placeholder":
            return {"name": name, "op": "input"}
        if op == "output":
            if not isinstance(node.args[0], torch.fx.Node):
                raise ExportError("the model must return a single tensor")
            return {"name": name, "op": "output", "inputs": [self.names[node.args[0]]]}
        if op == "get_attr":
            value = self.gm
            for part in node.target.split("."):
                value = getattr(value, part)
            return {"name": name, "op": "constant", "tensor": self.tensor(node.target, value)}
        if op == "call_function":
            fn = function_name(node.target)
            if fn is None:
                raise ExportError(f"cannot export function {getattr(node.target, '__name__', node.target)} (node {name})")
            return {"name": name, "op": "call", "fn": fn, "args": self.encode(list(node.args), name),
                    "kwargs": self.encode_kwargs(node.kwargs, name)}
        if op == "call_method":
            if node.target not in METHODS:
                raise ExportError(f"cannot export tensor method .{node.target}() (node {name})")
            return {"name": name, "op": "method", "fn": node.target, "args": self.encode(list(node.args), name),
                    "kwargs": self.encode_kwargs(node.kwargs, name)}
        return self.emit_module(node)

    def emit_module(self, node: torch.fx.Node) -> dict | list[dict]:
        m, name = self.module(node), node.name
        x = node.args[0] if node.args else None
        if len(node.args) != 1 or node.kwargs:
            raise ExportError(f"cannot export module call {node.target} with {len(node.args)} arguments")

        def call(fn, *args, **kwargs):
            return {"name": name, "op": "call", "fn": fn, "args": self.encode([x, *args], name),
                    "kwargs": self.encode_kwargs(kwargs, name + ".kw")}

        if isinstance(m, IDENTITY):  # no node: its users read its input
            return []
        if type(m) is nn.Conv2d:
            if m.padding_mode != "zeros":
                raise ExportError(f"cannot export {node.target}: padding_mode={m.padding_mode!r}")
            return call("conv2d", m.weight, m.bias, _int(m.stride), _int(m.padding), _int(m.dilation), m.groups)
        if type(m) is nn.Linear:
            return call("linear", m.weight, m.bias)
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            return call("onebit.batch_norm_affine", torch.from_numpy(np.stack(_bn_affine(m))))
        if isinstance(m, BINARY):
            return self.emit_float_binary(node, m)
        if isinstance(m, ThermometerEncoding):
            return call("onebit.thermometer", m.thresholds)
        if isinstance(m, FixedPoint):
            return call("onebit.fixed_point", m.levels)
        if isinstance(m, Quantizer):
            shape = self.shape(x)
            act = activation_sign(m, shape[1], spatial=len(shape) == 4)
            return call("onebit.sign_threshold", act.threshold, act.sample_mean)
        simple = {
            nn.ReLU: lambda: call("relu"), nn.ReLU6: lambda: call("relu6"), nn.Sigmoid: lambda: call("torch.sigmoid"),
            nn.Tanh: lambda: call("torch.tanh"), nn.GELU: lambda: call("gelu"), nn.SiLU: lambda: call("silu"),
            nn.Hardtanh: lambda: call("hardtanh", m.min_val, m.max_val),
            nn.PReLU: lambda: call("prelu", m.weight),
            nn.LeakyReLU: lambda: call("leaky_relu", m.negative_slope),
            nn.Softmax: lambda: call("softmax", m.dim),
            nn.MaxPool2d: lambda: call("max_pool2d", _int(m.kernel_size), _int(m.stride), _int(m.padding),
                                       _int(m.dilation), m.ceil_mode),
            nn.AvgPool2d: lambda: call("avg_pool2d", _int(m.kernel_size), _int(m.stride), _int(m.padding), m.ceil_mode,
                                       m.count_include_pad, m.divisor_override),
            nn.AdaptiveAvgPool2d: lambda: call("adaptive_avg_pool2d", m.output_size),
            nn.AdaptiveMaxPool2d: lambda: call("adaptive_max_pool2d", m.output_size),
            nn.Flatten: lambda: call("torch.flatten", m.start_dim, m.end_dim),
            LearnableBias: lambda: call("onebit.add_channel", m.bias),
            RPReLU: lambda: call("onebit.rprelu", m.gamma, m.beta, m.zeta),
            LearnedScale: lambda: call("onebit.learned_scale", m.channel, getattr(m, "row", None),
                                        getattr(m, "column", None)),
        }
        for kind, make in simple.items():
            if type(m) is kind:
                return make()
        raise ExportError(f"cannot export module {type(m).__name__} ({node.target}): not supported by the 1-bit runtime")

    def emit_float_binary(self, node: torch.fx.Node, m) -> list[dict]:
        """A binary layer the kernels cannot run, as its exact float computation:
        [sign] -> [pad with pad_value] -> conv/linear with the quantized weights -> [output scale]."""
        x, name = node.args[0], node.name
        key = name
        nodes, cur = [], x
        conv = isinstance(m, BinaryConv2d)

        def add(fn, *args):
            nonlocal cur
            ir = {"name": f"{name}.{len(nodes)}", "op": "call", "fn": fn,
                  "args": self.encode([cur, *args], f"{key}.{len(nodes)}"), "kwargs": {}}
            nodes.append(ir)
            cur = _Ref(ir["name"])

        if m.input_quantizer is not None:
            shape = self.shape(x)
            act = activation_sign(m.input_quantizer, shape[1], spatial=len(shape) == 4)
            add("onebit.sign_threshold", act.threshold, act.sample_mean)
        was = m.training
        m.eval()
        with torch.no_grad():
            weight = m.quantized_weight().detach()
        m.train(was)
        if conv:
            padding = m.padding
            if m.pad_value != 0.0 and any(padding):
                add("pad", (padding[1], padding[1], padding[0], padding[0]), "constant", m.pad_value)
                padding = (0, 0)
            add("conv2d", weight, m.bias, m.stride, padding, m.dilation, m.groups)
        else:
            add("linear", weight, m.bias)
        scale = m.output_scale
        if scale is not None:
            if not isinstance(scale, LearnedScale):
                raise ExportError(f"cannot export output scale {type(scale).__name__} of {node.target}")
            add("onebit.learned_scale", scale.channel, getattr(scale, "row", None), getattr(scale, "column", None))
        nodes[-1]["name"] = name
        nodes[-1]["float_binary_layer"] = True  # reported by the runtime's summary
        return nodes

    # ------------------------------------------------------------------ driver
    def build(self) -> Program:
        nodes = list(self.gm.graph.nodes)
        if sum(n.op == "placeholder" for n in nodes) != 1:
            raise ExportError("the model must take a single input tensor")
        for node in nodes:
            if node in self.skip or node in self.fused:
                continue
            if self.binary_layer(node) is not None:
                self.plan_binary(node)
        for node in nodes:
            if node in self.skip:
                continue
            emitted = self.fused[node]() if node in self.fused else self.emit_float(node)
            emitted = [self.without_empty_kwargs(ir) for ir in (emitted if isinstance(emitted, list) else [emitted])]
            self.program.nodes += emitted
            self.names[node] = emitted[-1]["name"] if emitted else self.names[node.args[0]]
        return self.program


def _int(pair):
    """A (h, w) pair as one int when both are equal (the functional ops take either)."""
    return pair[0] if isinstance(pair, (tuple, list)) and len(pair) == 2 and pair[0] == pair[1] else pair


class _Ref:
    """A reference to an IR value that has no fx node (the steps of a float binary layer)."""

    def __init__(self, name: str):
        self.name = name


def _conv_values(layer: _BinaryLayer, k: int) -> torch.Tensor:
    """``[2k+1, cout, 1, 1]``: the layer's float output for every dot product in [-k, k]."""
    m = layer.module
    cout = layer.negative.shape[0]
    dots = torch.arange(-k, k + 1, dtype=torch.float32)
    scale = torch.from_numpy(layer.scale).float() if layer.scale is not None else torch.ones(cout)
    y = dots[:, None] * scale[None, :]
    if m.bias is not None:
        y = y + m.bias.detach().float()[None, :]
    y = y[:, :, None, None]
    if m.output_scale is not None:
        y = y * m.output_scale.channel.detach().float()
    return y


@torch.no_grad()
def _through(modules: list[nn.Module], y: torch.Tensor) -> torch.Tensor:
    for mod in modules:
        was = mod.training
        mod.eval()
        y = mod(y)
        mod.train(was)
    return y


def _transitions(negative: torch.Tensor, k: int):
    """``(t, flip)`` with ``negative[dot + k] == ((dot < t) != flip)`` for every dot in [-k, k] (one
    column per channel), or None where a column changes more than once."""
    cout = negative.shape[1]
    changes = (negative[1:] != negative[:-1]).sum(0)
    if bool((changes > 1).any()):
        return None
    big = np.int32(k + 1)
    thresh = np.empty(cout, dtype=np.int32)
    flip = np.zeros(cout, dtype=np.uint8)
    for c in range(cout):
        col = negative[:, c].numpy()
        if changes[c] == 0:
            thresh[c] = big if col[0] else -big  # always / never negative
        else:
            first = int(np.argmax(col != col[0]))  # index of the first dot with the other bit
            thresh[c] = first - k
            flip[c] = 0 if col[0] else 1  # negative below t (increasing) or at/above t (decreasing)
    return thresh, flip


def _step_thresholds(layer: _BinaryLayer, k: int, modules: list[nn.Module], consumer: ActivationSign):
    """Integer thresholds ``t`` and flips so that the next layer's bit is ``(dot < t) != flip``,
    by evaluating the float chain on every dot product in [-k, k]; None if not monotone."""
    cout = layer.negative.shape[0]
    y = _through(modules, _conv_values(layer, k))[:, :, 0, 0]
    t = consumer.threshold if consumer.threshold is not None else torch.zeros(cout)
    return _transitions(~(y >= t[None, :]), k)


@dataclass
class _Step:
    """A binary conv's tail computed on its integer accumulator (``_Builder._sign_step`` / ``_level_step``)."""

    fn: str  # onebit.sign_step / onebit.level_step
    source: torch.fx.Node  # the conv, or the max pool of its accumulators
    absorbed: list[torch.fx.Node]
    sigma: np.ndarray  # [cout] float32 +-1: the conv outputs sigma * dot (pools see the order of the float output)
    tensors: dict[str, np.ndarray]  # stored under CONV.ROLE, arguments after the source
    args: list = field(default_factory=list)  # plain arguments after the tensors
    residual: torch.fx.Node | None = None


def _sigma(layer: _BinaryLayer) -> np.ndarray:
    """``[cout]`` float32: the sign of each channel's dot-product scale (+1 where it is 0)."""
    m = layer.module
    cout = layer.negative.shape[0]
    scale = layer.scale if layer.scale is not None else np.ones(cout)
    if m.output_scale is not None:
        scale = scale * _f64(m.output_scale.channel).reshape(cout)
    return np.where(scale < 0, -1.0, 1.0).astype(np.float32)


def _by_sigma_dot(values: torch.Tensor, sigma: np.ndarray) -> torch.Tensor:
    """``values`` ``[2k+1, cout]`` indexed by dot + k, re-indexed by sigma * dot + k."""
    down = torch.from_numpy(sigma < 0)
    values = values.clone()
    values[:, down] = values[:, down].flip(0)
    return values


def _sign_thresholds(layer: _BinaryLayer, k: int, modules: list[nn.Module]):
    """``(sigma, thresholds [1, cout], flip [1, cout])``: the sign of ``modules(y)`` for the float output ``y``
    of every dot product in [-k, k], as ``(sigma * dot >= t) != flip``; ``sigma`` is the sign of the dot's
    scale, so that a max pool of ``sigma * dot`` picks the window's largest ``y``. None if not monotone."""
    sigma = _sigma(layer)
    negative = ~(_through(modules, _conv_values(layer, k))[:, :, 0, 0] >= 0)
    found = _transitions(_by_sigma_dot(negative, sigma), k)
    return None if found is None else (sigma, found[0][None], found[1][None])


def _level_table(layer: _BinaryLayer, k: int, modules: list[nn.Module], grid: FixedPoint, clamp):
    """``(sigma, base [cout], thresholds [cout, m])`` int32: ``grid(modules(y))`` in units of ``1/levels`` for the
    float output ``y`` of every dot product is ``base + #{j: sigma * dot >= thresholds[j]}`` (a staircase;
    levels beyond what the ``clamp`` after a residual add can tell apart are cut off; unused thresholds
    are ``k + 1``)."""
    sigma = _sigma(layer)
    levels = _through([grid], _through(modules, _conv_values(layer, k)))[:, :, 0, 0] * grid.levels
    if not torch.equal(levels, levels.round()) or levels.abs().max() >= 2 ** 24:
        raise ExportError(f"{grid} does not give integers in units of 1/{grid.levels}")
    levels = _by_sigma_dot(levels, sigma).to(torch.int64)
    if clamp is not None:  # with r in [low, high]: clamp(L + r) is the same for L = low - high and below
        levels = levels.clamp(clamp[0] - clamp[1], clamp[1] - clamp[0])
    rises = levels[1:] - levels[:-1]  # [2k, cout]
    if bool((rises < 0).any()):
        raise ExportError(f"the branch before {grid} is not non-decreasing in the accumulator: no integer staircase")
    thresholds = np.full((levels.shape[1], max(int(rises.sum(0).max()), 1)), k + 1, dtype=np.int32)
    for c in range(levels.shape[1]):
        dots = np.repeat(np.arange(-k + 1, k + 1), rises[:, c].numpy())
        thresholds[c, :len(dots)] = dots
    return sigma, levels[0].to(torch.int32).numpy(), thresholds


def build_program(model: nn.Module, example_input: torch.Tensor) -> Program:
    """The exported graph of ``model`` (switched to eval mode) traced on ``example_input``."""
    model.eval()
    return _Builder(model, example_input).build()


def export(model: nn.Module, example_input: torch.Tensor, path: str | Path, *, model_info: dict | None = None,
           check: bool = True) -> Program:
    """Export ``model`` (switched to eval mode) to ``path``, a ``.onebit`` file; returns the program.

    ``model_info`` is stored as is (``onebit bench`` rebuilds the float twin from ``name``,
    ``num_classes``, ``in_channels``, ``image_size``); the registered name of a zoo model is
    recorded by default. ``check`` runs the written file on ``example_input``: ``program.check``
    holds the largest relative logit difference and the top-1 agreement, and a warning is given
    when they exceed 1e-4 or differ."""
    program = build_program(model, example_input)
    with torch.no_grad():
        expected = model(example_input)
    info = {"name": getattr(model, "onebit_name", None), "num_classes": int(expected.shape[-1]),
            "in_channels": int(example_input.shape[1]), "image_size": int(example_input.shape[-1])}
    program.model = {**info, **(model_info or {})}
    fileformat.save(path, program.graph(), program.tensors)
    if check:
        from onebit.deploy.runtime import load

        program.check = compare_logits(load(path)(example_input), expected)
        if program.check["max_rel"] > 1e-4 or program.check["top1_agree"] < 1.0:
            warnings.warn(f"exported {path} differs from the PyTorch model on the example input: {program.check}")
    return program


def compare_logits(got: torch.Tensor, expected: torch.Tensor) -> dict:
    """Max relative difference (to the largest |logit| of each sample) and top-1 agreement."""
    got, expected = torch.as_tensor(got).float(), torch.as_tensor(expected).float()
    denom = expected.abs().amax(dim=-1, keepdim=True).clamp_min(1e-12)
    rel = ((got - expected).abs() / denom).max().item()
    agree = (got.argmax(-1) == expected.argmax(-1)).float().mean().item()
    return {"max_rel": rel, "top1_agree": agree}
