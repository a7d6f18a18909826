"""``onebit bench``: latency of an exported model at batch 1 and 8, on 1 and all threads, next to
the same architecture in float PyTorch (eval mode, NCHW and channels-last), measured side by side.

    onebit bench model.onebit
"""
from __future__ import annotations

import sys
import time
from typing import Callable


def add_arguments(parser) -> None:
    parser.add_argument("model", help="an exported .onebit file")
    parser.add_argument("--batches", default="1,8", help="batch sizes (default 1,8)")
    parser.add_argument("--threads", default="1,all", help="thread counts; 'all' = the CPUs (default 1,all)")
    parser.add_argument("--repeat", type=int, default=10, help="timed runs per case; the minimum is reported (default 10)")


def min_time(fn: Callable[[], object], repeat: int, warmup: int = 2) -> float:
    """Minimum wall time of ``fn()`` over ``repeat`` runs, in seconds (the machine may be shared:
    the minimum is the least disturbed run)."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def float_twin(info: dict):
    """The exported architecture with float layers (random weights: only the time matters)."""
    from onebit.models import create_model

    if info.get("name") is None:
        return None
    return create_model(info["name"], info["num_classes"], in_channels=info["in_channels"],
                        image_size=info["image_size"], binary_type=(False, False)).eval()


def thread_counts(text: str) -> list[int]:
    import os

    return [os.cpu_count() or 1 if t.strip() == "all" else int(t) for t in text.split(",")]


def main(args) -> int:
    import torch

    from onebit.deploy import load

    try:
        runtime = load(args.model)
        batches = [int(b) for b in args.batches.split(",")]
        threads = thread_counts(args.threads)
    except (ValueError, FileNotFoundError) as err:
        print(f"onebit bench: error: {err}", file=sys.stderr)
        return 2
    info = runtime.info
    twin = float_twin(info)
    shape = (info["in_channels"], info["image_size"], info["image_size"])
    print(f"{args.model}: {info.get('name')} {'x'.join(map(str, shape))}, min of {args.repeat} runs (ms)")
    print(f"{'batch':>5} {'threads':>7} {'onebit':>9} {'float':>9} {'float CL':>9} {'speedup':>8}")
    previous = torch.get_num_threads()
    try:
        for th in threads:
            torch.set_num_threads(th)
            runtime.threads = th
            for b in batches:
                x = torch.randn(b, *shape)
                t_bin = min_time(lambda: runtime(x), args.repeat)
                t_nchw = t_cl = float("nan")
                if twin is not None:
                    with torch.no_grad():
                        t_nchw = min_time(lambda: twin(x), args.repeat)
                        twin_cl, x_cl = twin.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
                        t_cl = min_time(lambda: twin_cl(x_cl), args.repeat)
                        twin.to(memory_format=torch.contiguous_format)
                best = min(t_nchw, t_cl)
                print(f"{b:>5} {th:>7} {1e3 * t_bin:9.2f} {1e3 * t_nchw:9.2f} {1e3 * t_cl:9.2f} {best / t_bin:7.1f}x")
    finally:
        torch.set_num_threads(previous)
    if twin is None:
        print("(no float twin: the file does not name a registered model)")
    return 0
