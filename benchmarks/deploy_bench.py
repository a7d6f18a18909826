"""1-bit CPU inference (onebit.deploy) against float PyTorch, side by side in one run.

1. Binary 3x3 convolutions of ResNet-18's shapes (batch 1) against ``F.conv2d`` float32 on the same
   input: the kernel alone (bit-packed input, float output: how it runs inside a network, where
   the previous layer writes the bits) and the whole layer (float input binarized first).
2. Binary GEMM throughput (no output transform) in binary MACs per second and per cycle, as a fraction
   of the popcount ceiling of the kernel path, measured here: the tile's instruction mix looped in
   registers (avx512: vpxorq + vpopcntq + vpaddq; avx2: the printed arithmetic).
3. Bi-Real Net-18 (the zoo's ``birealnet18``, 224x224, random weights: only time and size matter)
   exported to ``.onebit`` against the same architecture in float PyTorch eval mode (NCHW and
   channels-last): latency at batch 1, throughput at batch 8 and 32 (also with ``batch_chunk=1``: the
   batch run image by image); file size against float32.
4. Exactness on real data: every test image of digits (a cnn_small trained here for a few epochs)
   and CIFAR-10 (resnet20_1w1a with random weights and BatchNorm statistics, weights +-1 and
   +-alpha; birealnet18 with +-1 weights: its channels-last stem and binary convs run image by image
   at batch 500): largest relative logit difference to PyTorch eval mode and images whose top-1 class
   differs. With +-alpha weights PyTorch's own float sums of +-alpha are rounded (the runtime's
   integer dot products are not), so a pre-activation within a rounding of a sign threshold may
   flip and the logits differ.

Times are the minimum over ``--repeat`` interleaved runs (the machine may be shared), in a plain
process as a user runs it; ``--tuned_malloc`` re-executes the script with glibc told to keep freed
memory (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``), so that neither side pays page faults
for re-allocating its activations each run. ``ONEBIT_KERNEL=avx2|avx512|amx|scalar`` picks the kernel path; on a CPU that runs both avx512 and amx, the
layers and the network are timed on both in the same run.

Usage:  python benchmarks/deploy_bench.py [--threads 1,2] [--repeat 30] [--batches 1,8,32] [--data_path /work/shared/data] [--breakdown] [--previous] [--task_transform] [--against CHECKOUT]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(1 << 30), "MALLOC_TRIM_THRESHOLD_": str(1 << 31)}
RESNET18_3X3 = [(56, 64), (28, 128), (14, 256), (7, 512)]


def interleaved_min(fns: dict, repeat: int, warmup: int = 2, clock=time.perf_counter, block: int = 1,
                    idle: float = 0.0) -> dict:
    """Minimum time (s) of each function, the functions run in turn in every round, in reverse order every other
    round (so that each one follows both of its neighbours: a call finds the caches its predecessor left). ``clock``:
    wall time, or ``time.process_time`` (the process's CPU time: on a shared machine it leaves out the time the
    process waits for a core, so with one thread it is the cost of the call itself). ``block``: each function
    runs that many times in a row per round (every call but the first of a block follows a call of its own);
    ``idle``: seconds of sleep before each timed call (a call after a pause: idle threads asleep)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    best = {name: float("inf") for name in fns}
    for round_ in range(repeat):
        for name, fn in list(fns.items())[::-1 if round_ % 2 else 1]:
            for _ in range(block):
                if idle:
                    time.sleep(idle)
                start = clock()
                fn()
                best[name] = min(best[name], clock() - start)
    return best


def clock_for(threads: int, cpu_time: bool):
    """The clock of the measurements on ``threads`` threads (CPU time only for one thread: with more, it
    would add the threads' times and their waits at barriers)."""
    return time.process_time if cpu_time and threads == 1 else time.perf_counter


def word_path_pair(path: str) -> str | None:
    """The other one of avx512 / amx when the path in use is one of them and the CPU runs both (timed side by side)."""
    from onebit.deploy.kernels import available_kernels

    other = {"avx512": "amx", "amx": "avx512"}.get(path)
    return other if other in available_kernels() else None


def clock_ghz() -> float:
    """Clock from a chain of dependent integer adds (1 cycle each): the best of many short runs,
    so that runs preempted on a shared machine do not count."""
    from onebit.deploy.kernels import library

    n, best = 2_000_000, float("inf")
    for _ in range(300):
        start = time.perf_counter()
        library().ob_dependent_adds(n)
        best = min(best, time.perf_counter() - start)
    return n / best / 1e9


def cpu_line() -> str:
    model, flags = "?", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model == "?":
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    simd = [f for f in ("avx2", "fma", "avx512f", "avx512bw", "avx512_vpopcntdq", "amx_int8") if f in flags]
    return f"{model}, {os.cpu_count()} CPUs, {' '.join(simd) or 'no AVX'}"


def _loop_ceiling(loop, macs_per_round: int, ghz: float) -> float | None:
    """MACs per cycle of a kernel's instruction loop (``loop(n)``: n rounds, -1 where the CPU lacks it): the best
    of many short runs."""
    n, best = 20_000, float("inf")
    if loop(1) < 0:
        return None
    for _ in range(200):
        start = time.perf_counter()
        loop(n)
        best = min(best, time.perf_counter() - start)
    return n * macs_per_round / best / (ghz * 1e9)


def popcount_ceiling(ghz: float) -> float | None:
    """Binary MACs per cycle of the avx512 tile's instruction mix looped in registers (None without
    AVX-512 VPOPCNTDQ)."""
    from onebit.deploy.kernels import library

    return _loop_ceiling(library().ob_popcount_loop, 16 * 512, ghz)


def amx_ceiling(ghz: float) -> float | None:
    """int8 MACs per cycle of AMX TDPBSSD looped on 4 accumulators (None without AMX-INT8). On +-1 bytes each int8
    MAC is one binary MAC."""
    from onebit.deploy.kernels import library

    return _loop_ceiling(library().ob_amx_loop, 4 * 16384, ghz)


def bench_layers(threads: list[int], repeat: int, ghz: float, cpu_time: bool = False) -> None:
    import torch
    import torch.nn.functional as F

    from onebit.deploy import get_kernel, set_kernel
    from onebit.deploy.bitconv import BinaryConvKernel

    path = get_kernel()
    ceiling = popcount_ceiling(ghz) if path in ("avx512", "amx") else 192.0 if path == "avx2" else None
    paths = [path] + ([other] if (other := word_path_pair(path)) else [])

    print("\n## 1-2. Binary 3x3 convolutions (ResNet-18 shapes, batch 1, zero padding), min of", repeat, "(ms)")
    print(f"{'layer':>12} {'thr':>3} {'path':>6} {'F.conv2d':>9} {'kernel':>8} {'layer':>8} {'x kernel':>9} {'x layer':>8} "
          f"{'GEMM':>7} {'G bMAC/s':>9} {'bMAC/cyc':>9} {'of ceiling':>10}")
    g = torch.Generator().manual_seed(0)
    for side, c in RESNET18_3X3:
        x = torch.randn(1, c, side, side, generator=g)
        w = torch.randn(c, c, 3, 3, generator=g)
        conv = BinaryConvKernel((w < 0).numpy(), stride=(1, 1), padding=(1, 1), zero_padding=True, reuse_planes=True)
        mult, bias, out = torch.rand(c) + 0.5, torch.randn(c), torch.empty(1, c, side, side)
        macs = side * side * c * c * 9
        for th in threads:
            torch.set_num_threads(th)
            planes = conv.binarize(x, None, th)
            fns = {"float": lambda: F.conv2d(x, w, padding=1)}
            for kind in ("kernel", "layer", "gemm"):  # (each call selects its path first: all pay the same ctypes call)
                for p in paths:
                    fns[kind, p] = {
                        "kernel": lambda p=p: (set_kernel(p), conv.run(planes, mult, bias, out=out, threads=th)),
                        "layer": lambda p=p: (set_kernel(p), conv.run(conv.binarize(x, None, th), mult, bias, out=out,
                                                                      threads=th)),
                        "gemm": lambda p=p: (set_kernel(p), conv.run(planes, None, None, float_out=False, threads=th)),
                    }[kind]
            t = interleaved_min(fns, repeat, clock=clock_for(th, cpu_time))
            set_kernel(path)
            for p in paths:
                rate = macs / t["gemm", p]
                print(f"{f'{side}x{side}x{c}':>12} {th:>3} {p:>6} {1e3 * t['float']:9.3f} {1e3 * t['kernel', p]:8.3f} "
                      f"{1e3 * t['layer', p]:8.3f} {t['float'] / t['kernel', p]:8.1f}x {t['float'] / t['layer', p]:7.1f}x "
                      f"{1e3 * t['gemm', p]:7.3f} {rate / 1e9:9.0f} {rate / (ghz * 1e9) / th:9.0f} "
                      f"{rate / (ghz * 1e9) / th / ceiling if ceiling else float('nan'):9.0%}")
    if "amx" in paths:
        tdp = amx_ceiling(ghz)
        print(f"""
amx: the stride-1 word convolutions of 18+ word rows whose weights take at most 1 MB as bytes (here 28x28x128 and
14x14x256) run on the AMX int8 GEMM (TDPBSSD on +-1 bytes), the others on the avx512 path's popcount GEMM (the same
numbers as its rows "avx512", up to noise). "of ceiling" is against the popcount ceiling for both. AMX ceiling,
measured: TDPBSSD on 4 accumulators looped on tiles in registers: {tdp:.0f} MACs/cycle per core ({tdp / ceiling:.1f}x the
popcount ceiling below).""")
    if path in ("avx512", "amx"):
        print(f"""
Popcount ceiling of the avx512 path at {ghz:.2f} GHz, measured: the tile's vpxorq + vpopcntq + vpaddq (512 binary
MACs per triple, 16 independent chains) looped in registers: {ceiling:.0f} binary MACs/cycle per core. "of ceiling"
is the GEMM's useful MACs per cycle and thread against it. (FP32 FMA, 2 x 512-bit: 32 MACs/cycle.)""")
    else:
        print(f"""
Popcount ceilings at {ghz:.2f} GHz of the avx2 path, worked out for AMD Zen 3 (the CPU it was tuned on; "of
ceiling" uses the 192 below) -- 4 vector ALU pipes, of which 2
shuffle/shift; 4 integer ALUs; at most 6 micro-ops dispatched per cycle), per core:
  xor + popcount on AVX2 (no vector popcount): per 256-bit word vpxor, vpand, vpsrlw, vpand, 2 vpshufb
    (nibble table), vpaddb, vpaddb (accumulate) = 8 vector ops -> 4 pipes -> 2 cycles
    -> 128 binary MACs/cycle;
  scalar POPCNT on 64-bit words: xor + popcnt + add = 3 ops on 4 ALUs -> 85 binary MACs/cycle;
  this kernel (table lookup, no xor, no popcount): vpshufb + vpaddb = 2 vector ops per 32 positions x
    4 bits = 128 binary MACs, 2 shuffles/cycle -> 256 binary MACs/cycle; measured in isolation (a register
    loop of vpshufb + vpaddb pairs) 1.64 pairs/cycle -> ~210 binary MACs/cycle; the GEMM's inner loop (12
    pairs + 6 table broadcasts per 64 positions x 6 channels) 8.0 cycles -> 192 on the positions it computes.
  (FP32 FMA: 2 pipes x 8 lanes = 16 MACs/cycle.) "bMAC/cyc" above counts useful MACs per thread.""")


def bench_task_transform(threads: list[int], repeat: int, workdir: Path, batches: tuple[int, ...],
                         cpu_time: bool = False) -> None:
    """The output transform of the binary convs per task (the avx512 path's) against the per-channel loops, in
    one process with the calls alternating: the ResNet-18 3x3 layers as in table 1 (each call after an
    ``F.conv2d`` of the layer, so with the caches that leaves) in the benchmark's form (float output) and in
    Bi-Real's (float output over the residual + the next layer's bits), and Bi-Real-18 (identical logits checked)."""
    import torch
    import torch.nn.functional as F

    from onebit.deploy import export, load
    from onebit.deploy.bitconv import BinaryConvKernel
    from onebit.deploy.kernels import use_task_transform
    from onebit.models import create_model

    def alternate(fns: dict, th: int, before=None) -> dict:
        best, clock = {}, clock_for(th, cpu_time)
        for rnd in range(2 + repeat):
            for name, fn in fns.items():
                for on in (False, True):
                    use_task_transform(on)
                    if before is not None:
                        before()
                    start = clock()
                    fn()
                    if rnd >= 2:
                        best[name, on] = min(best.get((name, on), float("inf")), clock() - start)
        use_task_transform(True)
        return best

    print(f"\n## Output transform per task against per channel (same process, alternating), min of {repeat} (ms)")
    print(f"{'layer':>12} {'thr':>3} {'kernel: per-channel':>19} {'per task':>8} {'speed':>6} "
          f"{'Bi-Real form: per-channel':>25} {'per task':>8} {'speed':>6}")
    g = torch.Generator().manual_seed(0)
    for side, c in RESNET18_3X3:
        x, w = torch.randn(1, c, side, side, generator=g), torch.randn(c, c, 3, 3, generator=g)
        conv = BinaryConvKernel((w < 0).numpy(), stride=(1, 1), padding=(1, 1), zero_padding=True, reuse_planes=True)
        nxt = BinaryConvKernel((torch.randn(c, c, 3, 3, generator=g) < 0).numpy(), padding=(1, 1), reuse_planes=True)
        mult, bias, out = torch.rand(c, generator=g) + 0.5, torch.randn(c, generator=g), torch.empty(1, c, side, side)
        residual, float_thresh = torch.randn(1, c, side, side, generator=g), torch.randn(c, generator=g) * 0.1
        for th in threads:
            torch.set_num_threads(th)
            planes = conv.binarize(x, None, th)
            t = alternate({
                "kernel": lambda: conv.run(planes, mult, bias, out=out, threads=th),
                "bireal": lambda: conv.run(planes, mult, bias, residual=residual, out=residual, bits_for=nxt,
                                           float_thresh=float_thresh, threads=th),
            }, th, before=lambda: F.conv2d(x, w, padding=1))
            print(f"{f'{side}x{side}x{c}':>12} {th:>3} {1e3 * t['kernel', False]:19.3f} {1e3 * t['kernel', True]:8.3f} "
                  f"{t['kernel', False] / t['kernel', True]:5.2f}x {1e3 * t['bireal', False]:25.3f} "
                  f"{1e3 * t['bireal', True]:8.3f} {t['bireal', False] / t['bireal', True]:5.2f}x")
    path = workdir / "birealnet18.onebit"
    if not path.exists():
        export(create_model("birealnet18", 1000).eval(), torch.randn(1, 3, 224, 224), path, check=False)
    runtime = load(path)
    print(f"{'Bi-Real-18':>12} {'thr':>3} {'batch':>5} {'per-channel':>11} {'per task':>8} {'speed':>6}")
    for batch in batches:
        x = torch.randn(batch, 3, 224, 224, generator=g)
        for th in threads:
            torch.set_num_threads(th)
            runtime.threads = th
            t = alternate({"net": lambda: runtime(x)}, th)
            use_task_transform(False)
            per_channel = runtime(x)
            use_task_transform(True)
            same = torch.equal(per_channel, runtime(x))
            print(f"{'':>12} {th:>3} {batch:>5} {1e3 * t['net', False]:11.2f} {1e3 * t['net', True]:8.2f} "
                  f"{t['net', False] / t['net', True]:5.2f}x  logits {'identical' if same else 'DIFFER'}")


def float_twin(name: str, num_classes: int, side: int):
    from onebit.models import create_model

    return create_model(name, num_classes, image_size=side, binary_type=(False, False)).eval()


def load_previous(path: Path):
    """The runtime as it ran before its own float convolutions (stem conv, BN and max pool as PyTorch's channels-last
    conv and the kernels' pool; shortcut 1x1 conv and BN on PyTorch), for before/after ratios in one process."""
    from onebit.deploy import load, runtime

    fuse = runtime._fuse_conv_batch_norm
    runtime._fuse_conv_batch_norm = lambda nodes: nodes  # applied at load
    try:
        return load(path)
    finally:
        runtime._fuse_conv_batch_norm = fuse


def bench_network(threads: list[int], repeat: int, workdir: Path, breakdown: bool = False,
                  batches: tuple[int, ...] = (1,), cpu_time: bool = False, previous: bool = False) -> None:
    import torch

    from onebit.deploy import export, get_kernel, load, set_kernel
    from onebit.models import create_model

    path_in_use = get_kernel()
    other = word_path_pair(path_in_use)  # avx512 / amx: the network also on the other one, interleaved
    print("\n## 3. Bi-Real Net-18 (birealnet18, 224x224, 1000 classes), min of", repeat, "(batch 1; fewer at larger "
          "batches), ms per call and images/s")
    model = create_model("birealnet18", 1000).eval()
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    path = workdir / "birealnet18.onebit"
    export(model, x, path, check=False)
    params = sum(p.numel() for p in float_twin("birealnet18", 1000, 224).parameters())
    size = path.stat().st_size
    print(f"file: {size:,} bytes = {size / 1e6:.4f} MB ({size / 2**20:.3f} MiB); float32 parameters "
          f"{4 * params / 1e6:.1f} MB -> {4 * params / size:.1f}x smaller")
    runtime, chunked = load(path), load(path, batch_chunk=1)
    before = load_previous(path) if previous else None
    twin = float_twin("birealnet18", 1000, 224)
    twin_cl = float_twin("birealnet18", 1000, 224).to(memory_format=torch.channels_last)
    print(f"{'threads':>7} {'batch':>5} {'onebit':>8} {'float NCHW':>11} {'float CL':>9} {'x NCHW':>7} {'x CL':>6} "
          f"{'x best':>7} {'onebit img/s':>13} {'float img/s':>12} {'chunked img/s':>14}"
          f"{' previous ms  new/previous speed' if previous else ''}"
          f"{f' {other:>6} ms  {other}/{path_in_use} time' if other else ''}")
    for batch in batches:
        xb = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(batch))
        xb_cl = xb.contiguous(memory_format=torch.channels_last)
        rounds = max(3, repeat // batch) if batch > 1 else repeat
        for th in threads:
            torch.set_num_threads(th)
            runtime.threads = chunked.threads = th
            fns = {"onebit": lambda: runtime(xb), "nchw": lambda: twin(xb), "cl": lambda: twin_cl(xb_cl)}
            if batch > 1:
                fns["chunked"] = lambda: chunked(xb)
            if before is not None:
                before.threads = th
                fns["previous"] = lambda: before(xb)
            if other:  # (both select their path first)
                fns["onebit"] = lambda: (set_kernel(path_in_use), runtime(xb))
                fns["other"] = lambda: (set_kernel(other), runtime(xb))
            with torch.no_grad():
                t = interleaved_min(fns, rounds, warmup=1, clock=clock_for(th, cpu_time))
            best = min(t["nchw"], t["cl"])
            print(f"{th:>7} {batch:>5} {1e3 * t['onebit']:8.2f} {1e3 * t['nchw']:11.2f} {1e3 * t['cl']:9.2f} "
                  f"{t['nchw'] / t['onebit']:6.1f}x {t['cl'] / t['onebit']:5.1f}x {best / t['onebit']:6.1f}x "
                  f"{batch / t['onebit']:13.1f} {batch / best:12.1f} "
                  f"{batch / t['chunked'] if 'chunked' in t else float('nan'):14.1f}"
                  + (f" {1e3 * t['previous']:12.2f} {t['previous'] / t['onebit']:17.2f}x" if before is not None else "")
                  + (f" {1e3 * t['other']:9.2f} {t['other'] / t['onebit']:12.2f}x" if other else ""))
    set_kernel(path_in_use)
    if breakdown:
        for th in threads:
            torch.set_num_threads(th)
            runtime.threads = th
            for p in [path_in_use] + ([other] if other else []):  # (one path after the other)
                set_kernel(p)
                print(f"  {p} path:", end="")
                step_breakdown(runtime, x, th, repeat)
        set_kernel(path_in_use)


WORKER = """
import sys, time, torch
from onebit.deploy import load
runtime = load(sys.argv[1])
for line in sys.stdin:
    threads, batch = map(int, line.split())
    torch.set_num_threads(threads)
    runtime.threads = threads
    x = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(batch))
    start, cpu = time.perf_counter(), time.process_time()
    runtime(x)
    print(time.perf_counter() - start, time.process_time() - cpu, flush=True)
"""


def bench_against(checkout: Path, threads: list[int], repeat: int, workdir: Path, batches: tuple[int, ...],
                  cpu_time: bool = False) -> None:
    """Bi-Real-18 on this onebit and on the one in ``checkout`` (its kernels built in place), each in its own
    process (one Python cannot import two onebit packages), the calls interleaved: before/after ratios of
    changes to the compiled kernels, in one run."""
    import subprocess

    import torch

    from onebit.deploy import export
    from onebit.models import create_model

    path = workdir / "birealnet18.onebit"
    if not path.exists():
        export(create_model("birealnet18", 1000).eval(), torch.randn(1, 3, 224, 224), path, check=False)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    here = Path(__file__).resolve().parents[1]
    workers = {name: subprocess.Popen([sys.executable, "-c", WORKER, str(path)], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True, env={**env, "PYTHONPATH": str(root)},
                                      cwd=root)  # (python -c puts its working directory first on sys.path)
               for name, root in (("this", here), ("other", checkout.resolve()))}
    print(f"\n## Bi-Real Net-18 against {checkout} (separate processes, calls interleaved), min of {repeat} (ms)")
    print(f"{'threads':>7} {'batch':>5} {'this':>8} {'other':>8} {'other/this':>10}")
    try:
        for batch in batches:
            for th in threads:
                best = {name: float("inf") for name in workers}
                for _ in range(2 + max(3, repeat // batch)):  # the first 2 rounds warm up
                    for name, worker in workers.items():
                        for _ in range(2):  # twice in a row: the other process's idle OpenMP threads spin ~5 ms
                            worker.stdin.write(f"{th} {batch}\n")
                            worker.stdin.flush()
                            wall, cpu = map(float, worker.stdout.readline().split())
                            best[name] = min(best[name], cpu if clock_for(th, cpu_time) is time.process_time else wall)
                print(f"{th:>7} {batch:>5} {1e3 * best['this']:8.2f} {1e3 * best['other']:8.2f} "
                      f"{best['other'] / best['this']:9.2f}x")
    finally:
        for worker in workers.values():
            worker.stdin.close()
            worker.wait()


def step_breakdown(runtime, x, threads: int, repeat: int) -> dict[str, float]:
    """Minimum wall time (s) of each step of the runtime (the whole network run in order, repeat times),
    grouped by kind, printed and returned; the rest of a call is the runtime's Python between steps."""
    import torch

    steps, free = runtime._steps, runtime._last_use
    best = [float("inf")] * len(steps)
    with torch.no_grad():
        for _ in range(repeat):
            env = {runtime._input: x}
            for i, ((name, step), dead) in enumerate(zip(steps, free)):
                start = time.perf_counter()
                env[name] = step(env, threads)
                best[i] = min(best[i], time.perf_counter() - start)
                for value in dead:
                    env.pop(value, None)
    kinds = {node["name"]: node.get("fn", node["op"]) for node in runtime._nodes}
    groups: dict[str, float] = {}
    for (name, _), t in zip(steps, best):
        kind = kinds[name]
        group = ("binary convs" if kind == "binary_conv2d" else "shortcuts" if "shortcut" in name
                 else f"{name} ({kind})")
        groups[group] = groups.get(group, 0.0) + t
    print(f"  {threads} thread(s), minimum per step over {repeat} runs (ms): " +
          ", ".join(f"{k} {1e3 * v:.2f}" for k, v in groups.items()) + f"; sum {1e3 * sum(best):.2f}")
    return groups


def randomize_bn(model, seed: int):
    import torch

    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 2 - 1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) * 3 - 1.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) * 2 - 1)
    return model.eval()


def train_digits(model, data, epochs: int = 8):
    import torch

    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(epochs):
        model.train()
        for images, labels in data.train:
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(images), labels).backward()
            opt.step()
    return model.eval()


def bench_exactness(data_path: str | None, workdir: Path) -> None:
    import torch

    from onebit.data import build_data
    from onebit.deploy import export, load
    from onebit.deploy.export import compare_logits
    from onebit.models import create_model

    print(f"\n## 4. Exactness on every test image ({torch.get_num_threads()} threads)")
    torch.manual_seed(0)
    cases = [("digits", None, lambda d: train_digits(create_model("cnn_small_1w1a", 10, in_channels=1, image_size=8,
                                                                  method="bnn"), d),
              "cnn_small_1w1a, bnn, trained 8 epochs here")]
    if data_path:
        cases += [
            ("cifar10", data_path, lambda d: randomize_bn(create_model("resnet20_1w1a", 10, method="bnn"), 1),
             "resnet20_1w1a, bnn (weights +-1), random weights and BN statistics"),
            ("cifar10", data_path, lambda d: randomize_bn(create_model("resnet20_1w1a", 10, method="rbnn"), 1),
             "resnet20_1w1a, rbnn (weights +-alpha, per-sample thresholds), random weights and BN statistics"),
            ("cifar10", data_path, lambda d: randomize_bn(create_model("birealnet18", 10, image_size=32, method="bnn"), 1),
             "birealnet18 (ImageNet stem: 7x7/2 conv, BN, 3x3/2 max pool), bnn (weights +-1), random weights and BN "
             "statistics"),
        ]
    for name, path, make, what in cases:
        data = build_data(name, path, batch_size=128, batch_size_test=500, workers=0)
        model = make(data)
        file = workdir / "exactness.onebit"
        export(model, next(iter(data.test))[0][:1], file, check=False)
        runtime = load(file)
        worst, beyond, differ, seen, correct = 0.0, 0, 0, 0, 0
        for images, labels in data.test:
            got = runtime(images)
            with torch.no_grad():
                expected = model(images)
            rel = (got - expected).abs().amax(1) / expected.abs().amax(1)  # per image, as compare_logits
            worst = max(worst, compare_logits(got, expected)["max_rel"])
            beyond += int((rel > 1e-4).sum())
            differ += int((got.argmax(1) != expected.argmax(1)).sum())
            correct += int((got.argmax(1) == labels).sum())
            seen += len(labels)
        print(f"{name} ({what}): {seen} images, max relative logit difference {worst:.2e} ({beyond} images above "
              f"1e-4), top-1 differs on {differ}, onebit top-1 accuracy {100 * correct / seen:.2f}%")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2", help="thread counts (default 1,2)")
    parser.add_argument("--repeat", type=int, default=30, help="interleaved rounds; minimum reported (default 30)")
    parser.add_argument("--data_path", default="/work/shared/data", help="folder with cifar-10-batches-py ('' to skip)")
    parser.add_argument("--only", choices=["layers", "network", "exactness"], help="run one part")
    parser.add_argument("--batches", default="1,8,32", help="network batch sizes (default 1,8,32)")
    parser.add_argument("--tuned_malloc", action="store_true", help="tell glibc to keep freed memory (see above)")
    parser.add_argument("--breakdown", action="store_true", help="also time each step of the 1-bit network")
    parser.add_argument("--previous", action="store_true",
                        help="also time the network as the runtime ran it before its own float convolutions")
    parser.add_argument("--against", type=Path, help="also time Bi-Real-18 on the onebit checkout at this path (kernels "
                        "built in place), interleaved with this one in separate processes")
    parser.add_argument("--task_transform", action="store_true",
                        help="also time the binary convs' output transform per task against per channel (avx512)")
    parser.add_argument("--cpu_time", action="store_true",
                        help="time 1-thread runs in process CPU time (for a shared machine; 2+ threads stay wall time)")
    args = parser.parse_args()
    if args.tuned_malloc and any(os.environ.get(k) != v for k, v in MALLOC_ENV.items()):
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **MALLOC_ENV})

    import torch

    from onebit.deploy import get_kernel

    threads = [int(t) for t in args.threads.split(",")]
    ghz = clock_ghz()
    print(f"# onebit deploy benchmark\n{cpu_line()}; kernel path {get_kernel()}; clock ~{ghz:.2f} GHz; "
          f"torch {torch.__version__}; load average {os.getloadavg()[0]:.1f}"
          f"{'; glibc keeps freed memory' if args.tuned_malloc else '; default allocator'}"
          f"{'; 1-thread times in process CPU time' if args.cpu_time else ''}")
    with tempfile.TemporaryDirectory() as tmp:
        if args.only in (None, "layers"):
            bench_layers(threads, args.repeat, ghz, args.cpu_time)
        if args.only in (None, "network"):
            bench_network(threads, max(5, args.repeat // 3), Path(tmp), args.breakdown,
                          tuple(int(b) for b in args.batches.split(",")), args.cpu_time, args.previous)
        if args.task_transform:
            bench_task_transform(threads, args.repeat, Path(tmp), tuple(int(b) for b in args.batches.split(",")),
                                 args.cpu_time)
        if args.against is not None:
            bench_against(args.against, threads, args.repeat, Path(tmp), tuple(int(b) for b in args.batches.split(",")),
                          args.cpu_time)
        if args.only in (None, "exactness"):
            bench_exactness(args.data_path or None, Path(tmp))
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
