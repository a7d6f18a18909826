"""Golden vectors: what every binary layer of the training graph computes on one input, for
checking a hardware (FPGA/ASIC) implementation layer by layer.

``onebit export CKPT --golden DIR`` (or :func:`write_golden`) runs the model in eval mode on one
input and writes NumPy ``.npy`` files (readable from C, MATLAB, Verilog test benches via
numpy/`np.load` or any NPY reader) with ``DIR/index.json`` describing them::

    {"format": "onebit-golden-1", "model": ..., "bit_encoding": "+1 -> 1, -1 -> 0 (stored as int8 +-1)",
     "input": "input.npy",                    # float32 [1, C, H, W], the image as the model receives it
     "encoding": {"kind": "thermometer", "thresholds": [...], "bits": "encoding.npy"},   # when present
     "layers": [{"name", "kind": "conv2d" | "linear", "in_shape", "out_shape", "kernel_size", "stride",
                 "padding", "pad_value", "groups",
                 "input_bits": "NN_name.input_bits.npy",     # int8 +-1, what the layer multiplies
                 "weight_bits": "NN_name.weight_bits.npy",   # int8 +-1 [Cout, Cin/groups, kh, kw] or [out, in]
                 "weight_scale": "NN_name.weight_scale.npy" | null,  # float32 [Cout], alpha of +-alpha weights
                 "accumulator": "NN_name.accumulator.npy",   # int32: sum of input_bits * weight_bits
                 "output": "NN_name.output.npy",             # float32: the layer's output = alpha * accumulator
                 "output_bits": "MM_next.input_bits.npy" | null,
                 "integer_step": {...} | absent}, ...],
     "logits": "logits.npy"}

Layers are in execution order. ``accumulator`` is the integer dot product of the ±1 inputs and
±1 weights (the XNOR-popcount result ``2*popcount(xnor) - n``); padded taps hold ``pad_value``
(0 as the papers: such taps add nothing; 1: +1). ``output_bits`` is what the next binary layer in
execution order receives (its ``input_bits``): in a chain network (VGG, AlexNet) that is this
layer's output after the per-channel offset, pooling and sign; in a residual network it is taken
after the residual add. Every file is checked against the training graph as it is written:
``alpha * accumulator`` must give the layer's output.

``integer_step`` is how the 1-bit runtime computes what follows the layer from its accumulator
(from :func:`onebit.deploy.build_program`, the ``.onebit`` file's own tensors; a hardware design
implements the same): ``{"kind": "threshold", "threshold": int32 [1, Cout], "flip": uint8 [1, Cout],
"pooled": bool}``: the next bit is ``+1`` where ``(acc >= threshold) != flip``, ``acc`` the accumulator
(max-pooled first, as the model's next max pool, when ``pooled``); or ``{"kind": "fixed_point",
"base": int32 [Cout], "threshold": int32 [Cout, m], "levels", "low", "high", "residual": bool}``: the
residual stream's next value is ``clamp(base[c] + #{j: acc >= threshold[c, j]} + levels * residual, low,
high) / levels`` (the residual being the block input as the model's shortcut passes it; ``low``/``high``
null: no clamp), whose sign is the next bit.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from onebit.layers import BinaryConv2d, BinaryLinear, ThermometerEncoding
from onebit.quant import precision_of

__all__ = ["write_golden", "GOLDEN_FORMAT"]

GOLDEN_FORMAT = "onebit-golden-1"


def _is_binary(m: nn.Module) -> bool:
    return isinstance(m, (BinaryConv2d, BinaryLinear)) and precision_of(m.input_quantizer) == 1 \
        and precision_of(m.weight_quantizer) == 1


def _pm1(t: torch.Tensor, what: str) -> np.ndarray:
    values = torch.unique(t)
    if not all(v in (-1.0, 1.0) for v in values.tolist()):
        raise ValueError(f"{what} is not +-1 (values {values[:6].tolist()}): not a fully binary layer")
    return t.to(torch.int8).numpy()


def _weight_bits(layer: nn.Module) -> tuple[np.ndarray, np.ndarray | None]:
    w = layer.quantized_weight().detach().double()
    alpha = w.abs().flatten(1).amax(1)
    if not torch.equal(w.abs().flatten(1), alpha[:, None].expand(w.shape[0], w[0].numel())):
        raise ValueError(f"{layer}: weights are not +-alpha per output channel")
    signs = _pm1(torch.where(w >= 0, 1.0, -1.0), "weights")
    return signs, None if torch.all(alpha == 1) else alpha.float().numpy()


def _accumulator(layer: nn.Module, bits: torch.Tensor, weight: np.ndarray) -> torch.Tensor:
    x, w = bits.double(), torch.from_numpy(weight).double()
    if isinstance(layer, BinaryLinear):
        return F.linear(x, w)
    padding = layer.padding
    if layer.pad_value != 0.0 and any(padding):
        x = F.pad(x, (padding[1], padding[1], padding[0], padding[0]), value=layer.pad_value)
        padding = 0
    return F.conv2d(x, w, None, layer.stride, padding, layer.dilation, layer.groups)


@torch.no_grad()
def write_golden(model: nn.Module, example: torch.Tensor, folder: str | Path, name: str | None = None) -> dict:
    """Write the golden vectors of ``model`` on ``example`` (one sample) into ``folder``; returns the index."""
    if example.shape[0] != 1:
        raise ValueError(f"golden vectors are for one input, got a batch of {example.shape[0]}")
    model = model.eval()
    binary = [(n, m) for n, m in model.named_modules() if _is_binary(m)]
    if not binary:
        raise ValueError("the model has no layer with 1-bit inputs and 1-bit weights")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    seen: list[tuple[str, nn.Module, torch.Tensor, torch.Tensor]] = []
    encodings: list[tuple[ThermometerEncoding, torch.Tensor]] = []

    def record(module, inputs, output):
        seen.append((names[module], module, module.quantized_input(inputs[0]).detach(), output.detach()))

    names = {m: n for n, m in binary}
    hooks = [m.register_forward_hook(record) for _, m in binary]
    hooks += [m.register_forward_hook(lambda m, i, o: encodings.append((m, o.detach())))
              for m in model.modules() if isinstance(m, ThermometerEncoding)]
    try:
        logits = model(example)
    finally:
        for h in hooks:
            h.remove()

    def save(filename: str, array: np.ndarray) -> str:
        np.save(folder / filename, array)
        return filename

    index = {"format": GOLDEN_FORMAT, "model": name or getattr(model, "onebit_name", type(model).__name__),
             "bit_encoding": "+1 -> 1, -1 -> 0 (stored as int8 +-1)",
             "input": save("input.npy", example.float().numpy())}
    if encodings:
        enc, bits = encodings[0]
        index["encoding"] = {"kind": "thermometer", "thresholds": enc.thresholds.tolist(),
                             "channel_order": "input channel c -> bits c*K .. c*K+K-1, threshold k ascending",
                             "bits": save("encoding.npy", _pm1(bits, "encoding"))}
    layers = []
    for k, (lname, layer, x_bits, y) in enumerate(seen):
        prefix = f"{k:02d}_{lname.replace('.', '_')}"
        weight, alpha = _weight_bits(layer)
        acc = _accumulator(layer, x_bits, weight)
        expected = acc * (torch.from_numpy(alpha).double().view(1, -1, *[1] * (acc.dim() - 2)) if alpha is not None else 1)
        if layer.bias is not None:
            expected = expected + layer.bias.double().view(1, -1, *[1] * (acc.dim() - 2))
        expected = layer.scaled_output(expected.float()) if layer.output_scale is not None else expected
        if not torch.allclose(expected.float(), y.float(), rtol=1e-5, atol=1e-4 * float(y.abs().max()) + 1e-6):
            raise ValueError(f"layer {lname}: alpha * accumulator does not give the layer's output")
        entry = {"name": lname, "kind": "linear" if isinstance(layer, BinaryLinear) else "conv2d",
                 "in_shape": list(x_bits.shape), "out_shape": list(y.shape),
                 "input_bits": save(f"{prefix}.input_bits.npy", _pm1(x_bits, f"input of {lname}")),
                 "weight_bits": save(f"{prefix}.weight_bits.npy", weight),
                 "weight_scale": save(f"{prefix}.weight_scale.npy", alpha) if alpha is not None else None,
                 "accumulator": save(f"{prefix}.accumulator.npy", acc.round().to(torch.int32).numpy()),
                 "output": save(f"{prefix}.output.npy", y.float().numpy()), "output_bits": None}
        if isinstance(layer, BinaryConv2d):
            entry.update(kernel_size=list(layer.kernel_size), stride=list(layer.stride), padding=list(layer.padding),
                         pad_value=layer.pad_value, groups=layer.groups)
        if layers:
            layers[-1]["output_bits"] = entry["input_bits"]
        layers.append(entry)
    _integer_steps(model, example, layers, save)
    index["layers"] = layers
    index["logits"] = save("logits.npy", logits.float().numpy())
    (folder / "index.json").write_text(json.dumps(index, indent=1))
    return index


def _integer_steps(model: nn.Module, example: torch.Tensor, layers: list[dict], save) -> None:
    """Add each layer's ``integer_step`` from the exported program (where the exporter made one)."""
    from onebit.deploy.export import build_program

    program = build_program(model, example)
    nodes = {n["name"]: n for n in program.nodes}
    steps = {n["step_of"]: n for n in program.nodes if "step_of" in n}
    for k, entry in enumerate(layers):
        key = entry["name"].replace(".", "_")
        prefix = f"{k:02d}_{key}"
        node, step = nodes.get(key), steps.get(key)
        if (node is not None and step is not None and f"{key}.affine" in program.tensors
                and (program.tensors[f"{key}.affine"][0] < 0).any()):
            raise ValueError(f"layer {entry['name']}: a negative accumulator scale is not described by the golden format")
        if node is not None and "bits_threshold" in node.get("tensors", []):
            entry["integer_step"] = {"kind": "threshold", "pooled": False,
                                     "threshold": save(f"{prefix}.threshold.npy", program.tensors[f"{key}.bits_threshold"][None]),
                                     "flip": save(f"{prefix}.flip.npy", program.tensors[f"{key}.bits_flip"][None])}
        elif step is not None and step["fn"] == "onebit.sign_step":
            entry["integer_step"] = {"kind": "threshold", "pooled": step["args"][0]["node"] != key,
                                     "threshold": save(f"{prefix}.threshold.npy", program.tensors[f"{key}.step_threshold"]),
                                     "flip": save(f"{prefix}.flip.npy", program.tensors[f"{key}.step_flip"])}
        elif step is not None and step["fn"] == "onebit.level_step":
            levels, low, high = step["args"][3:6]
            entry["integer_step"] = {"kind": "fixed_point", "levels": levels, "low": low, "high": high,
                                     "residual": len(step["args"]) > 6,
                                     "base": save(f"{prefix}.base.npy", program.tensors[f"{key}.step_base"]),
                                     "threshold": save(f"{prefix}.threshold.npy", program.tensors[f"{key}.step_threshold"])}
