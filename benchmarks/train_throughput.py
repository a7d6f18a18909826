"""Training-step throughput: onebit's default (fast) path against its ``--eager`` path, per method.

One training step = forward + backward + SGD step (+ the method's after-step hooks) on random
input, built the way ``onebit train`` builds it (onebit.train.speed): the default path
compiles the forward and backward (torch.compile, inductor; forced here, where ``onebit train``
compiles only runs long enough to pay for it), trains channels-last and, where the CPU has
native bfloat16, under bfloat16 autocast; ``--eager`` runs the plain float32 NCHW step, as the
seeds' code does. On a CPU with native bfloat16 the row "default --no-amp" is the default path in
float32 (``onebit train --no-amp``). Every method and path
takes its turn in every round, so a busy machine slows them alike; the table gives medians
over the rounds.

Also per row: the peak memory a step allocates (tensors, from the profiler's allocator
events: activations, gradients, temporaries; not the weights), the memory a step touches
afresh (minor page faults; the default path keeps freed memory for reuse,
onebit.train.speed.keep_freed_cpu_memory, a setting of the whole process: the eager rows
measured here get it too, which ``onebit train --eager`` does not), the one-time compilation
(the first call, minus a steady step; ``--cold`` bypasses torch's on-disk compile caches,
as a first run on a machine), and a whole epoch of ``--epoch_images`` images with that
compilation counted (the epoch's last, smaller batch runs eagerly on the default path).

``--breakdown`` profiles ``--rounds`` more steps per row (default and eager alternating) and splits them
into the convolution kernels and the rest (quantizers, BatchNorm, activations, optimizer), with the ceiling
the default path could reach if the rest took no time at all.

RBNN's rotation update (three alternating Procrustes iterations over every binary layer) runs
once per epoch, outside the step; it is timed separately per model on a warmed-up process.

    python benchmarks/train_throughput.py --cold                     # the table of BENCHMARKS.md
    python benchmarks/train_throughput.py --configs resnet20_1w1a:32:256 --methods rbnn irnet --rounds 5
    python benchmarks/train_throughput.py --configs resnet20_1w1a:32:256 --methods irnet rbnn --breakdown
"""
from __future__ import annotations

import argparse
import platform
import resource
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from onebit.analysis.summary import summary
from onebit.models import create_model
from onebit.quant.rbnn import RbnnWeight
from onebit.quant.schedules import after_step_hooks, set_epoch_temperature
from onebit.train.precision import MixedPrecision, native_bfloat16
from onebit.train.speed import SpeedOptions

ROTATION_MODELS = (("resnet20_1w1a", 32), ("vgg_small_1w1a", 32), ("resnet18_1w1a", 32), ("resnet18_1w1a", 224))
PATHS = {"default": {"compile": True, "channels_last": True}, "eager": {"eager": True}}
FLOAT32_PATH = {"default --no-amp": {"compile": True, "channels_last": True, "amp": False}}
EPOCH_IMAGES = {32: 50_000, 224: 1_281_167}  # CIFAR-10 / ImageNet training sets


def make_step(method: str, model_name: str, batch: int, size: int, path: dict, channels: int = 3):
    """A training step of ``model_name`` with ``method`` on ``path`` (options of ``onebit train``, as PATHS)."""
    torch.manual_seed(0)
    speed = SpeedOptions(path, torch.device("cpu"))
    precision = MixedPrecision(path.get("amp"), torch.device("cpu"), eager=path.get("eager", False))
    model = speed.prepare(create_model(model_name, 10, in_channels=channels, image_size=size, method=method))
    set_epoch_temperature(model, 0, 1, 1.0, 1.0)  # scheduled surrogates in a mid-training state
    forward = speed.training_forward(model, batch)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    x, y = torch.randn(batch, channels, size, size), torch.randint(0, 10, (batch,))
    after_step = after_step_hooks(model)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with precision.autocast():
            loss = F.cross_entropy(forward(speed.images(x)), y)
        loss.backward()
        opt.step()
        for hook in after_step:
            hook()

    return step


def peak_step_memory(step) -> int:
    """Bytes: the highest level of tensor memory allocated during one ``step`` above its start."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = sorted((e for e in prof.events() if e.self_cpu_memory_usage), key=lambda e: e.time_range.start)
    level = peak = 0
    for e in events:  # allocations are attributed to the op that made them, frees to "[memory]" events
        level += e.self_cpu_memory_usage
        peak = max(peak, level)
    return peak


CONVOLUTION_FORWARD = ("aten::mkldnn_convolution", "aten::_slow_conv2d_forward", "aten::thnn_conv2d")
CONVOLUTION_BACKWARD = ("aten::convolution_backward", "aten::_slow_conv2d_backward")  # kernels, not their wrappers


def convolution_times(step) -> tuple[float, float, float]:
    """Of one profiled ``step``: (seconds in forward convolution kernels, in backward ones, the whole step)."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        step()
        total = time.perf_counter() - start
    events = prof.key_averages()
    forward = sum(e.self_cpu_time_total for e in events if e.key.startswith(CONVOLUTION_FORWARD))
    backward = sum(e.self_cpu_time_total for e in events if e.key.startswith(CONVOLUTION_BACKWARD))
    return forward / 1e6, backward / 1e6, total


def print_breakdown(model_name: str, size: int, batch: int, methods: list[str], steps: dict, repeats: int) -> None:
    """Where the default path's step goes: convolutions against the rest, and what 3x would leave the rest."""
    print(f"\nConvolutions in profiled steps (torch.profiler, mean of {repeats} steps per row, the two paths "
          "alternating). Forward GFLOP/s: 2 x the model's multiply-accumulates (onebit.analysis.summary) x batch "
          "over the forward convolutions' time. Ceiling: the profiled eager step over the default path's "
          "convolutions alone. Rest at 3x: what a 3x step leaves for everything but the convolutions.")
    print("| method | path | step (s), profiled | conv forward (s) | conv backward (s) | forward GFLOP/s | rest (s) "
          "| ceiling | rest at 3x (s) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for method in methods:
        totals = summary(create_model(model_name, 10, image_size=size, method=method), (1, 3, size, size)).totals
        flops = 2 * (totals["bops"] + totals["flops"]) * batch
        samples = {path: [] for path in ("default", "eager")}
        for _ in range(repeats):
            for path, rows in samples.items():
                rows.append(convolution_times(steps[(method, path)]))
        means = {path: [statistics.mean(column) for column in zip(*rows)] for path, rows in samples.items()}
        eager = means["eager"][2]
        for path, (forward, backward, total) in means.items():
            conv = forward + backward
            line = (f"| {method} | {path} | {total:.3f} | {forward:.3f} | {backward:.3f} | {flops / forward / 1e9:.0f} "
                    f"| {total - conv:.3f} |")
            print(line + (f" {eager / conv:.1f}x | {eager / 3 - conv:.3f} |" if path == "default" else " | |"))


def cpu_description() -> str:
    name = platform.processor() or platform.machine()
    flags: set[str] = set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name") and name in ("", platform.machine(), platform.processor()):
                name = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    wanted = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return (f"{name}; {', '.join(wanted) or 'flags unknown'}; torch {torch.__version__} CPU capability "
            f"{torch.backends.cpu.get_cpu_capability()}; native bfloat16: {native_bfloat16(torch.device('cpu'))}")


def rotation_update_seconds(model_name: str, image_size: int, repeats: int = 3) -> tuple[int, float, float]:
    """(binary layers, first call, median warm call) of one rotation update of the whole model."""
    torch.manual_seed(0)
    model = create_model(model_name, 10, image_size=image_size, method="rbnn")
    quantizers = [m for m in model.modules() if isinstance(m, RbnnWeight)]
    times = []
    for _ in range(repeats + 1):  # the first call pays LAPACK's warm-up
        start = time.perf_counter()
        for q in quantizers:
            q.update_rotation()
        times.append(time.perf_counter() - start)
    return len(quantizers), times[0], statistics.median(times[1:])


def compare_paths(model_name: str, size: int, batch: int, methods: list[str], paths: dict[str, dict], args) -> None:
    rows = [(m, p) for m in methods for p in paths]
    steps, first = {}, {}
    for row in rows:  # build and first call (compilation on the compiled paths), one row at a time
        steps[row] = make_step(row[0], model_name, batch, size, paths[row[1]])
        start = time.perf_counter()
        steps[row]()
        first[row] = time.perf_counter() - start
    memory = {row: peak_step_memory(step) for row, step in steps.items()}
    wall = {row: [] for row in rows}
    faults = {row: 0 for row in rows}
    for _ in range(args.rounds):
        for row, step in steps.items():
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            wall[row].append((time.perf_counter() - start) / args.steps)
            faults[row] += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    images = args.epoch_images or EPOCH_IMAGES.get(size, 50_000)
    full, tail = divmod(images, batch)
    print(f"\n{model_name}, {size}x{size}, batch {batch}, {args.threads} thread(s), {args.rounds} rounds x "
          f"{args.steps} steps; epoch = {images} images ({full} full batches + {tail} images)")
    print("| method | path | s/step, median | img/s | speed-up | peak step memory (MiB) | page faults/step (MiB) "
          "| compilation (s) | epoch (s), compilation included | epoch speed-up |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    page = resource.getpagesize()
    for method in methods:
        eager = statistics.median(wall[(method, "eager")])
        eager_epoch = (full + tail / batch) * eager
        for path, options in paths.items():
            t = statistics.median(wall[(method, path)])
            compiled = options.get("compile", False)
            compile_s = max(first[(method, path)] - t, 0.0) if compiled else 0.0
            epoch = compile_s + full * t + tail / batch * eager if compiled else eager_epoch
            touched = faults[(method, path)] * page / (args.rounds * args.steps) / 2**20
            print(f"| {method} | {path} | {t:.3f} | {batch / t:.0f} | {eager / t:.2f}x | "
                  f"{memory[(method, path)] / 2**20:.0f} | {touched:.0f} | {compile_s:.1f} | {epoch:.0f} | "
                  f"{eager_epoch / epoch:.2f}x |")
    if args.breakdown:
        print_breakdown(model_name, size, batch, methods, steps, args.rounds)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", nargs="+", default=["resnet20_1w1a:32:256", "resnet18_1w1a:224:32"],
                   metavar="MODEL:SIZE:BATCH")
    p.add_argument("--methods", nargs="+", default=["rbnn", "irnet", "bireal", "reactnet"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=1, help="timed steps per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--epoch_images", type=int, default=0,
                   help="images of the whole-epoch figure (default: 50,000 at 32x32, 1,281,167 at 224x224)")
    p.add_argument("--cold", action="store_true", help="bypass torch's on-disk compile caches (a first run)")
    p.add_argument("--no_rotation", action="store_true", help="skip the rotation-update table")
    p.add_argument("--breakdown", action="store_true",
                   help="also profile --rounds steps per row: time in convolutions against the rest")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.cold:
        import torch._inductor.config as inductor_config

        inductor_config.force_disable_caches = True
    print(f"CPU: {cpu_description()}")
    paths = dict(PATHS)
    if native_bfloat16(torch.device("cpu")):
        paths.update(FLOAT32_PATH)
        print("default path: bfloat16 autocast (native here); 'default --no-amp': the same in float32")
    else:
        print("default path: float32 (no native bfloat16 on this CPU: onebit train's default and --amp train in float32)")
    for spec in args.configs:
        model_name, size, batch = spec.split(":")
        compare_paths(model_name, int(size), int(batch), args.methods, paths, args)

    if not args.no_rotation:
        print("\nRBNN rotation update, all binary layers, once per epoch (wall seconds)")
        print("| model | binary layers | first call | warm |\n|---|---|---|---|")
        for name, size in ROTATION_MODELS:
            layers, first, warm = rotation_update_seconds(name, size)
            print(f"| {name} ({size}x{size}) | {layers} | {first:.3f} | {warm:.3f} |")


if __name__ == "__main__":
    main()
