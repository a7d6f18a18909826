"""``onebit infer``: evaluate an exported ``.onebit`` model on a data set's test split.

    onebit infer model.onebit --dataset cifar10 --data_path /data
    onebit infer model.onebit --dataset cifar10 --data_path /data --compare RUN/model_best.pth

``--compare`` also runs the checkpoint in PyTorch (eval mode) and reports, over every test
image, the largest relative logit difference and the images whose top-1 class differs.
"""
from __future__ import annotations

import sys
import time


def add_arguments(parser) -> None:
    parser.add_argument("model", help="an exported .onebit file")
    parser.add_argument("--dataset", required=True, help="data set name (see onebit.data.list_datasets)")
    parser.add_argument("--data_path", help="folder holding the data set (not needed for digits)")
    parser.add_argument("-b", "--batch_size", type=int, default=128, help="test batch size (default 128)")
    parser.add_argument("--threads", type=int, help="threads of the kernels and PyTorch ops (default: torch's)")
    parser.add_argument("--limit", type=int, help="evaluate only the first LIMIT test images")
    parser.add_argument("--compare", metavar="CHECKPOINT", help="also run this checkpoint in PyTorch and compare logits")


def main(args) -> int:
    from onebit.data import build_data
    from onebit.deploy import load

    try:
        runtime = load(args.model, threads=args.threads)
        data = build_data(args.dataset, args.data_path, batch_size=args.batch_size, batch_size_test=args.batch_size, workers=0)
        reference = None
        if args.compare:
            from onebit.models import load_trained_model

            reference = load_trained_model(args.compare).model
    except (ValueError, FileNotFoundError) as err:
        print(f"onebit infer: error: {err}", file=sys.stderr)
        return 2
    try:
        return _evaluate(args, runtime, data, reference)
    except ValueError as err:
        print(f"onebit infer: error: {err}", file=sys.stderr)
        return 2


def _evaluate(args, runtime, data, reference) -> int:
    import torch

    from onebit.deploy.export import compare_logits

    seen = top1 = top5 = disagree = 0
    max_rel, elapsed = 0.0, 0.0
    for images, labels in data.test:
        if args.limit is not None and seen >= args.limit:
            break
        if args.limit is not None:
            images, labels = images[: args.limit - seen], labels[: args.limit - seen]
        start = time.perf_counter()
        logits = runtime(images)
        elapsed += time.perf_counter() - start
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        top1 += int((top[:, 0] == labels).sum())
        top5 += int((top == labels[:, None]).any(1).sum())
        seen += len(labels)
        if reference is not None:
            with torch.no_grad():
                expected = reference(images)
            max_rel = max(max_rel, compare_logits(logits, expected)["max_rel"])
            disagree += int((logits.argmax(1) != expected.argmax(1)).sum())
    if seen == 0:
        print("onebit infer: error: the test split is empty", file=sys.stderr)
        return 2
    print(f"{args.model} on {args.dataset} test ({seen} images): top-1 {100 * top1 / seen:.2f}%  "
          f"top-5 {100 * top5 / seen:.2f}%  ({seen / elapsed:.0f} images/s, batch {args.batch_size})")
    if reference is not None:
        print(f"vs PyTorch {args.compare}: max relative logit difference {max_rel:.2e}, "
              f"top-1 differs on {disagree} of {seen} images")
    return 0
