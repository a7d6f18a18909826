"""Bi-Real Net-18 on onebit's runtime against the same graph in OpenVINO, side by side in one process.

The OpenVINO graph is built op by op from the same PyTorch model (``birealnet18``, random weights and
BatchNorm statistics, 224x224): the float stem (7x7/2 conv, BatchNorm as multiply + add, 3x3/2 max
pool), per binary conv a 2-level ``FakeQuantize`` (the sign) and ``BinaryConvolution`` (opset1,
``xnor-popcount``, u1 weights, zero padding) followed by the folded weight scale and BatchNorm and the
residual add, the float downsample shortcuts (2x2 average pool, 1x1 conv, BatchNorm), global average
pool and the classifier. OpenVINO fuses the sign into the binary convolution's input packing and runs
its ``jit_*_u1`` kernel (the script prints which primitives ran). Float parts run in fp32
(``INFERENCE_PRECISION_HINT=f32``: onebit's float parts are exact fp32; OpenVINO would otherwise use
bf16 on CPUs with AMX / AVX-512 BF16).

Both run with the same thread count (OpenVINO: one stream, ``INFERENCE_NUM_THREADS``); times are
the minimum over interleaved rounds (the machine may be shared), at batch 1 (latency) and batch 8
(throughput in images/s). Each round runs each runtime twice in a row (``--block``): after a call, a runtime's idle
threads keep cores busy for a while (onebit's OpenMP threads, libgomp's default, spin ~5 ms before they
sleep), and a call of the other runtime started in that time runs on fewer free cores (on 2 cores,
OpenVINO right after onebit measured ~1.6x its time); the minimum is then a call that follows its own
runtime's. ``--idle_ms`` adds a second table: each call after that long a pause (idle threads asleep, as
for requests that come now and then). On a CPU that runs both of onebit's avx512 and amx paths, onebit runs on both (also
interleaved). openvino is a benchmark-only dependency: ``pip install openvino``
(or ``pip install -e .[openvino]``).

``--breakdown`` adds where each one's time goes: OpenVINO's per-primitive times (its performance
counters, fastest of ``--repeat`` profiled runs) beside onebit's per-step times, and onebit's floor: its
steps other than the binary convolutions as measured (the stem and shortcut convs are PyTorch's, kept
for bit-exact logits) plus the network's binary MACs at the popcount ceiling measured by
``deploy_bench.py`` (and at the AMX int8 ceiling where the CPU has it), no time between steps, perfect
scaling over threads: the fastest onebit could be without faster float parts.

Usage:  python benchmarks/deploy_vs_openvino.py [--threads 1,2] [--repeat 30] [--batches 1,8] [--breakdown] [--block 2]
        [--idle_ms 20]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from deploy_bench import (  # noqa: E402
    amx_ceiling, clock_for, clock_ghz, cpu_line, interleaved_min, popcount_ceiling, randomize_bn, step_breakdown,
    word_path_pair,
)


def openvino_birealnet18(model, batch: int, side: int = 224):
    """The Bi-Real-18 graph of ``model`` (eval mode) in OpenVINO ops."""
    import numpy as np
    import openvino as ov
    import openvino.opset1 as op1
    import openvino.opset13 as op
    import torch

    def const(v):
        return op.constant(np.ascontiguousarray(np.asarray(v, dtype=np.float32)))

    def per_channel(v):
        return const(np.asarray(v, dtype=np.float32).reshape(1, -1, 1, 1))

    def bn_affine(bn):
        alpha = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach()
        return alpha, (bn.bias.detach() - bn.running_mean * alpha)

    def affine(x, alpha, beta):
        return op.add(op.multiply(x, per_channel(alpha)), per_channel(beta))

    def float_conv(x, conv):
        w = const(conv.weight.detach().numpy())
        return op.convolution(x, w, list(conv.stride), list(conv.padding), list(conv.padding), [1, 1])

    def binary_unit(x, unit, shortcut):
        conv = unit.conv
        q = conv.weight_quantizer(conv.weight).detach()  # +-scale per output channel
        scale = q.abs().amax((1, 2, 3))
        bits = ov.Tensor(ov.Type.u1, ov.Shape(list(q.shape)))  # bit 1 = +1, little-endian packing
        bits.data[:] = np.packbits((q >= 0).numpy().ravel(), bitorder="little")
        signs = op.fake_quantize(x, const(0.0), const(0.0), const(0.0), const(1.0), 2)  # x > 0 -> 1 (+1), else 0 (-1)
        pad = list(conv.padding)
        y = op1.binary_convolution(signs, ov.op.Constant(bits), list(conv.stride), pad, pad, [1, 1], "xnor-popcount", 0.0)
        alpha, beta = bn_affine(unit.post)
        return op.add(affine(y, alpha * scale, beta), shortcut)

    x_in = op.parameter([batch, 3, side, side], np.float32, name="x")
    x = float_conv(x_in, model.conv1)
    x = affine(x, *bn_affine(model.bn1))
    mp = model.maxpool
    x = op.max_pool(x, [mp.stride] * 2, [1, 1], [mp.padding] * 2, [mp.padding] * 2, [mp.kernel_size] * 2).output(0)
    for stage in range(model.num_stages):
        for block in getattr(model, f"layer{stage + 1}"):
            s = x
            if not isinstance(block.shortcut, torch.nn.Identity):
                pool, conv, bn = block.shortcut
                s = op.avg_pool(x, [pool.stride] * 2, [0, 0], [0, 0], [pool.kernel_size] * 2, True)
                s = affine(float_conv(s, conv), *bn_affine(bn))
            out = binary_unit(x, block.unit1, s)
            x = binary_unit(out, block.unit2, out)
    x = op.reduce_mean(x, op.constant(np.array([2, 3], dtype=np.int64)), False)
    logits = op.add(op.matmul(x, const(model.fc.weight.detach().numpy()), False, True), const(model.fc.bias.detach().numpy()))
    return ov.Model([logits], [x_in], "birealnet18")


OPENVINO_CONFIG = {"NUM_STREAMS": 1, "INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}


def primitives(compiled) -> dict[str, set[str]]:
    """Layer type -> the primitive names OpenVINO's CPU plugin chose (from its runtime model)."""
    found: dict[str, set[str]] = {}
    for node in compiled.get_runtime_model().get_ordered_ops():
        rt = node.get_rt_info()
        if "layerType" in rt and "primitiveType" in rt:
            found.setdefault(rt["layerType"].astype(str), set()).add(rt["primitiveType"].astype(str))
    return found


def openvino_breakdown(core, graph, threads: int, x_np, repeat: int) -> None:
    """OpenVINO's time per (layer type, primitive), from its performance counters: the profiled run with the
    smallest total of ``repeat`` (a compiled model of its own: counting may slow the timed one)."""
    compiled = core.compile_model(graph, "CPU", {**OPENVINO_CONFIG, "INFERENCE_NUM_THREADS": threads, "PERF_COUNT": True})
    request = compiled.create_infer_request()
    best = None
    for _ in range(repeat):
        request.infer({0: x_np})
        info = request.get_profiling_info()
        total = sum(p.real_time.total_seconds() for p in info)
        if best is None or total < best[0]:
            best = (total, info)
    by_kind: dict[str, float] = {}
    for p in best[1]:
        if p.real_time.total_seconds() > 0:
            key = f"{p.node_type} {p.exec_type}"
            by_kind[key] = by_kind.get(key, 0.0) + p.real_time.total_seconds()
    print(f"  OpenVINO, {threads} thread(s), fastest profiled run (ms): " + ", ".join(
        f"{k} {1e3 * v:.2f}" for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])) + f"; sum {1e3 * best[0]:.2f}")


def binary_mac_rates() -> dict[str, float]:
    """Binary MACs per second and core at the measured ceilings: 'popcount' (avx512 path) and 'amx', where the CPU
    runs them."""
    ghz = clock_ghz()
    rates = {name: ceiling(ghz) for name, ceiling in (("popcount", popcount_ceiling), ("amx", amx_ceiling))}
    return {name: per_cycle * ghz * 1e9 for name, per_cycle in rates.items() if per_cycle}


def floors(steps: dict[str, float], binary_macs: float, threads: int, rates: dict[str, float]) -> dict[str, float]:
    """Seconds per call of onebit with its non-binary ``steps`` as measured, nothing between steps, and its
    ``binary_macs`` at each ceiling ``rates``, scaled perfectly over ``threads``."""
    rest = sum(t for name, t in steps.items() if name != "binary convs")
    return {name: rest + binary_macs / (rate * threads) for name, rate in rates.items()}


def print_table(rows: list, batch: int, other: str | None, rates: dict[str, float]) -> None:
    """rows: (threads, times by runtime, floors by ceiling name: may be empty)."""
    print(f"{'threads':>7} {'onebit ms':>10} {'OpenVINO ms':>12} {'onebit/OV speed':>16} {'onebit img/s':>13} "
          f"{'OV img/s':>9}" + (f" {f'{other} ms':>10} {f'{other}/OV speed':>15}" if other else "")
          + "".join(f" {f'{name} floor ms':>17} {'floor/OV speed':>15}" for name in rates if any(r[2] for r in rows)))
    for th, t, floor in rows:
        print(f"{th:>7} {1e3 * t['onebit']:10.2f} {1e3 * t['openvino']:12.2f} {t['openvino'] / t['onebit']:15.2f}x "
              f"{batch / t['onebit']:13.1f} {batch / t['openvino']:9.1f}"
              + (f" {1e3 * t['other']:10.2f} {t['openvino'] / t['other']:14.2f}x" if other else "")
              + "".join(f" {1e3 * f:17.2f} {t['openvino'] / f:14.2f}x" for f in floor.values()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--repeat", type=int, default=30, help="interleaved rounds; minimum reported (default 30)")
    parser.add_argument("--breakdown", action="store_true", help="also where each one's time goes, per step / primitive")
    parser.add_argument("--block", type=int, default=2,
                        help="calls of each runtime in a row per round (default 2; 1: each call after the other's)")
    parser.add_argument("--idle_ms", type=float, default=0.0,
                        help="also time each call after a pause of this many ms (a second table)")
    parser.add_argument("--cpu_time", action="store_true",
                        help="time 1-thread runs in process CPU time (for a shared machine; 2+ threads stay wall time)")
    args = parser.parse_args()
    try:
        import openvino as ov
    except ImportError:
        sys.exit("openvino is not installed: pip install openvino (a benchmark-only dependency)")
    import numpy as np
    import torch

    from onebit.analysis import summary
    from onebit.deploy import export, get_kernel, load, set_kernel
    from onebit.models import create_model

    path_in_use = get_kernel()
    other = word_path_pair(path_in_use)  # avx512 / amx: onebit on both

    print(f"# onebit vs OpenVINO, Bi-Real Net-18 (224x224, 1000 classes)\n{cpu_line()}; onebit kernel path "
          f"{get_kernel()}; OpenVINO {ov.__version__}; torch {torch.__version__}; load average {os.getloadavg()[0]:.1f}"
          f"{'; 1-thread times in process CPU time' if args.cpu_time else ''}")
    torch.manual_seed(0)
    model = randomize_bn(create_model("birealnet18", 1000), 1)
    core = ov.Core()
    rates = binary_mac_rates() if args.breakdown else {}
    macs_per_image = summary(model, (1, 3, 224, 224)).totals["bops"]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "birealnet18.onebit"
        export(model, torch.randn(1, 3, 224, 224), path, check=False)
        runtime = load(path)
        batches = [int(b) for b in args.batches.split(",")]
        for batch in batches:
            x = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(batch))
            x_np = x.numpy()
            graph = openvino_birealnet18(model, batch)
            with torch.no_grad():
                expected = model(x)
            rows = []
            for th in (int(t) for t in args.threads.split(",")):
                compiled = core.compile_model(graph, "CPU", {**OPENVINO_CONFIG, "INFERENCE_NUM_THREADS": th})
                request = compiled.create_infer_request()
                if th == 1:
                    kinds = primitives(compiled)
                    print(f"\nbatch {batch}: OpenVINO primitives: " + ", ".join(
                        f"{k} {'/'.join(sorted(v))}" for k, v in sorted(kinds.items()) if k not in ("Const", "Input", "Output")))
                    got_ov = request.infer({0: x_np})[0]
                    got_ob = runtime(x)
                    for name, got in (("onebit", got_ob), ("OpenVINO", torch.from_numpy(np.asarray(got_ov)))):
                        rel = ((got - expected).abs().amax(1) / expected.abs().amax(1)).max().item()
                        agree = (got.argmax(1) == expected.argmax(1)).float().mean().item()
                        print(f"  {name} against PyTorch eval: max relative logit difference {rel:.1e}, top-1 agrees "
                              f"on {100 * agree:.0f}%")
                torch.set_num_threads(th)
                runtime.threads = th
                fns = {"onebit": lambda: runtime(x), "openvino": lambda: request.infer({0: x_np})}
                if other:  # (both onebit paths select theirs first)
                    fns["onebit"] = lambda: (set_kernel(path_in_use), runtime(x))
                    fns["other"] = lambda: (set_kernel(other), runtime(x))
                clock = clock_for(th, args.cpu_time)
                t = interleaved_min(fns, args.repeat, clock=clock, block=args.block)
                after_idle = interleaved_min(fns, args.repeat, clock=clock, idle=args.idle_ms / 1e3) if args.idle_ms else None
                if other:
                    set_kernel(path_in_use)
                floor = {}
                if args.breakdown:
                    floor = floors(step_breakdown(runtime, x, th, args.repeat), batch * macs_per_image, th, rates)
                    openvino_breakdown(core, graph, th, x_np, args.repeat)
                rows.append((th, t, floor, after_idle))
            print_table([(th, t, floor) for th, t, floor, _ in rows], batch, other, rates)
            if rates:
                print(f"(floors: binary MACs {macs_per_image:.3g} per image at " + ", ".join(
                    f"{name} {rate / 1e9:.0f} G/s per core" for name, rate in rates.items()) + ")")
            if args.idle_ms:
                print(f"each call after {args.idle_ms:g} ms idle:")
                print_table([(th, t, {}) for th, _, _, t in rows], batch, other, rates)
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
