"""Parameters, memory and multiply-accumulates of a model, by bit-width and per layer.

``summary(model, input_size)`` runs one forward pass at batch 1 with forward hooks and
returns a :class:`Summary`: ``print(s)`` shows the per-layer table and the totals.

Counting convention (the Bi-Real / ReActNet papers' one):

* **MAC layers** are ``nn.Conv*d``/``nn.Linear`` (and subclasses) and any module exposing
  ``input_bits`` and ``weight_bits`` (``BinaryConv2d``/``BinaryLinear``; 32 means "no
  quantizer"). Their MACs per image are ``output elements x weight[0].numel()``, i.e.
  ``C_out*H_out*W_out * (C_in/groups)*kh*kw`` for a convolution and ``out * in`` for a
  linear layer (transposed convolutions: ``input elements x weight[0].numel()``), with the
  weight the layer multiplies: a binary layer's quantized weight (IE-Net's has both branches).
* A MAC is **binary (a BOP)** only when input *and* weight are 1-bit; every other MAC is
  a **float MAC (FLOP)**, so a binary-weights-only or binary-activations-only layer counts
  as float (larq's rule). ``OPs = FLOPs + BOPs / 64`` (64-wide XNOR-popcount).
* BatchNorm, activations (PReLU, RSign thresholds...), pooling, bias-adds, shortcuts and
  other elementwise ops add **no MACs**: the papers ignore them. Their parameters are
  counted (as float); parameter-free modules get no table row.

Parameters and memory:

* Every parameter of ``model.parameters()`` is counted exactly once, in the row of the
  module that owns it. A MAC layer owns its whole sub-tree: its quantizers' parameters
  (RBNN's theta and alpha, ReActNet's RSign threshold, learned scales...) are float
  parameters of that layer. The layer's ``weight`` is stored at ``weight_bits``; every other
  parameter at 32 bits. Memory = sum of parameters x bits.
* Buffers are not counted. BatchNorm's running mean/variance fold with its gamma/beta into
  one scale and one offset per channel at deployment (larq counts such pairs once), so a
  BN layer deploys exactly its 2*C parameters. Other buffers (RBNN's rotation matrices,
  constants) only produce the binary weights during training and are not deployed.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

__all__ = ["LayerSummary", "Summary", "summary"]

FLOAT_BITS = 32
XNOR_POPCOUNT_WIDTH = 64
"""Binary MACs per 64-bit instruction: the ``OPs = FLOPs + BOPs / 64`` convention."""


@dataclass
class LayerSummary:
    """One table row: a MAC layer, or a module that owns parameters directly (BN, PReLU...)."""

    name: str
    kind: str
    output_shape: tuple[int, ...] | None = None
    """Shape of the (first) output at batch 1; ``None`` when the module never ran."""
    input_bits: int | None = None
    """Bits of the values the layer multiplies (``None``: not a MAC layer)."""
    weight_bits: int | None = None
    params: dict[int, int] = field(default_factory=dict)
    """Number of parameters by bit-width."""
    bops: int = 0
    """Binary MACs per image (input and weight both 1-bit)."""
    flops: int = 0
    """Float MACs per image (every other MAC)."""
    calls: int = 0

    @property
    def memory_bits(self) -> int:
        return sum(bits * n for bits, n in self.params.items())


def _is_mac_layer(module: nn.Module) -> bool:
    has_bits = hasattr(module, "input_bits") and hasattr(module, "weight_bits")
    return has_bits or isinstance(module, (nn.modules.conv._ConvNd, nn.Linear))


def _bit_widths(module: nn.Module) -> tuple[int, int]:
    if hasattr(module, "input_bits") and hasattr(module, "weight_bits"):
        return int(module.input_bits), int(module.weight_bits)
    return FLOAT_BITS, FLOAT_BITS


def _first_tensor(value):
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)):
        return next((t for t in map(_first_tensor, value) if t is not None), None)
    return None


def _multiplied_weight(module: nn.Module):
    """The weight the layer multiplies: a binary layer's quantized weight (IE-Net's stacks two
    branches along the input channels, doubling the MACs), else ``module.weight``."""
    if callable(getattr(module, "quantized_weight", None)):
        return module.quantized_weight()
    return getattr(module, "weight", None)


def _macs(module: nn.Module, weight, inputs, output) -> int:
    """MACs of one call at batch 1 (0 for a MAC layer without a ``weight`` tensor)."""
    if not isinstance(weight, torch.Tensor) or weight.dim() < 2:
        return 0
    transposed = getattr(module, "transposed", False)
    tensor = _first_tensor(inputs if transposed else output)
    return 0 if tensor is None else tensor.numel() * weight[0].numel()


def _layer_rows(model: nn.Module) -> tuple[dict[str, nn.Module], dict[str, LayerSummary]]:
    """The modules that get a row, with their parameters counted by bit-width."""
    modules, rows, seen = {}, {}, set()
    absorbed_prefixes: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(p) for p in absorbed_prefixes):
            continue  # inside a MAC layer: a quantizer, counted with its layer
        mac = _is_mac_layer(module)
        owned = list(module.named_parameters(recurse=mac))
        if not mac and not owned:
            continue
        row = LayerSummary(name or type(model).__name__, type(module).__name__)
        if mac:
            absorbed_prefixes.append(f"{name}." if name else "")
            row.input_bits, row.weight_bits = _bit_widths(module)
        for pname, p in owned:
            if id(p) in seen:  # shared parameter: counted at its first owner
                continue
            seen.add(id(p))
            bits = row.weight_bits if mac and pname == "weight" else FLOAT_BITS
            row.params[bits] = row.params.get(bits, 0) + p.numel()
        modules[name], rows[name] = module, row
    return modules, rows


@dataclass
class Summary:
    """The result of :func:`summary`: ``layers`` (rows in execution order) and ``totals``."""

    layers: list[LayerSummary]
    input_size: tuple[int, ...]

    @property
    def totals(self) -> dict:
        params: dict[int, int] = {}
        for row in self.layers:
            for bits, n in row.params.items():
                params[bits] = params.get(bits, 0) + n
        n_params = sum(params.values())
        memory_bits = sum(bits * n for bits, n in params.items())
        float32_bits = FLOAT_BITS * n_params
        bops = sum(r.bops for r in self.layers)
        flops = sum(r.flops for r in self.layers)
        return {
            "input_size": list(self.input_size),
            "params": n_params,
            "params_by_bits": dict(sorted(params.items())),
            "memory_bytes": memory_bits / 8,
            "float32_bytes": float32_bits / 8,
            "compression": float32_bits / memory_bits if memory_bits else 1.0,
            "bops": bops,
            "flops": flops,
            "ops": flops + bops / XNOR_POPCOUNT_WIDTH,
            "binary_mac_fraction": bops / (bops + flops) if bops + flops else 0.0,
        }

    def bit_widths(self) -> list[int]:
        """Parameter bit-widths shown as columns: 1 and 32 always, others when present."""
        present = {bits for row in self.layers for bits in row.params}
        return sorted(present | {1, FLOAT_BITS})

    def table(self) -> str:
        widths = self.bit_widths()
        header = ["Layer", "Output shape", "In bits", "W bits"]
        header += [f"{b}-bit params" for b in widths] + ["Memory (KiB)", "BOPs", "FLOPs"]

        def cells(name, shape, in_bits, w_bits, params, memory_bits, bops, flops):
            return [name, shape, in_bits, w_bits, *[str(params.get(b, 0)) for b in widths],
                    f"{memory_bits / 8192:.2f}", str(bops), str(flops)]

        body = [
            cells(
                r.name,
                "-" if r.output_shape is None else "x".join(map(str, r.output_shape)),
                "-" if r.input_bits is None else str(r.input_bits),
                "-" if r.weight_bits is None else str(r.weight_bits),
                r.params, r.memory_bits, r.bops, r.flops,
            )
            for r in self.layers
        ]
        t = self.totals
        total = cells("Total", "", "", "", t["params_by_bits"], t["memory_bytes"] * 8, t["bops"], t["flops"])
        col = [max(len(row[i]) for row in [header, *body, total]) for i in range(len(header))]

        def line(row):  # first two columns left-aligned, numbers right-aligned
            return "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, col))).rstrip()

        rule = "-" * len(line(header))
        return "\n".join([line(header), rule, *map(line, body), rule, line(total)])

    def totals_text(self) -> str:
        t = self.totals
        by_bits = " + ".join(f"{n:,} {b}-bit" for b, n in t["params_by_bits"].items())
        return "\n".join([
            f"Parameters: {t['params']:,} = {by_bits}" if by_bits else "Parameters: 0",
            f"Model size: {_bytes(t['memory_bytes'])}, float-32 equivalent {_bytes(t['float32_bytes'])}"
            + (f" ({t['compression']:.1f}x smaller)" if t["compression"] > 1 else " (no compression)"),
            f"MACs per image: {t['bops']:.3e} binary (BOPs) + {t['flops']:.3e} float (FLOPs),"
            f" {100 * t['binary_mac_fraction']:.1f}% binary",
            f"OPs = FLOPs + BOPs/{XNOR_POPCOUNT_WIDTH} = {t['ops']:.3e}",
        ])

    def to_dict(self) -> dict:
        """JSON-ready: ``{"input_size", "layers": [...], "totals": {...}}`` (bit-width keys as strings)."""
        layers = []
        for r in self.layers:
            d = asdict(r)
            d["output_shape"] = None if r.output_shape is None else list(r.output_shape)
            d["params"] = {str(b): n for b, n in sorted(r.params.items())}
            d["memory_bits"] = r.memory_bits
            layers.append(d)
        totals = self.totals
        totals["params_by_bits"] = {str(b): n for b, n in totals["params_by_bits"].items()}
        return {"input_size": list(self.input_size), "layers": layers, "totals": totals}

    def __str__(self) -> str:
        return f"{self.table()}\n\n{self.totals_text()}"

    __repr__ = __str__  # so that ``onebit.summary(model, size)`` at a prompt shows the table


def _bytes(n: float) -> str:
    for unit, size in (("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n:.2f} B"


@torch.no_grad()
def summary(model: nn.Module, input_size: tuple[int, ...]) -> Summary:
    """Count parameters, memory and MACs of ``model`` by bit-width, layer by layer.

    ``input_size`` is the shape of one input batch with batch 1, e.g. ``(1, 3, 224, 224)``.
    One forward pass runs in eval mode (BN statistics untouched) on the model's device;
    the model's train/eval mode is restored afterwards. Counts depend on shapes only, so a
    model built under ``torch.device("meta")`` works too (no memory, no arithmetic).
    """
    input_size = tuple(int(d) for d in input_size)
    if len(input_size) < 2 or input_size[0] != 1:
        raise ValueError(f"input_size is the input shape with batch 1, e.g. (1, 3, 224, 224); got {input_size}")
    modules, rows = _layer_rows(model)
    order: list[str] = []

    def record(name):
        def hook(module, inputs, output):
            row = rows[name]
            if row.calls == 0:
                order.append(name)
                out = _first_tensor(output)
                row.output_shape = None if out is None else tuple(out.shape)
            row.calls += 1
            if row.input_bits is not None:
                macs = _macs(module, _multiplied_weight(module), inputs, output)
                if row.input_bits == 1 and row.weight_bits == 1:
                    row.bops += macs
                else:
                    row.flops += macs

        return hook

    handles = [m.register_forward_hook(record(name)) for name, m in modules.items()]
    reference = next(iter(model.parameters()), None)
    device = reference.device if reference is not None else torch.device("cpu")
    dtype = reference.dtype if reference is not None and reference.is_floating_point() else torch.float32
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(input_size, generator=generator).to(device=device, dtype=dtype)
    was_training = model.training
    try:
        model.eval()
        model(x)
    except RuntimeError as err:
        raise ValueError(f"the forward pass of {type(model).__name__} on an input of size {input_size} failed: {err}") from err
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    never_ran = [n for n in rows if n not in order]
    return Summary([rows[n] for n in order + never_ran], input_size)
