"""Short real-data runs of the recipes in configs/ on CIFAR-10, scaled down to a shared CPU.

Two jobs (BENCHMARKS.md, section Recipes, holds the results):

``runs``: each recipe for ``--epochs`` epochs on the full CIFAR-10, exactly as
``onebit train --config RECIPE --data_path DATA --epochs N`` (the script prints that command).
The schedule is the recipe's, compressed into N epochs (cosine over N epochs, temperature
from Tmin to Tmax over N epochs): a smoke test of the recipe on real data, not a reproduction.

``two_stage``: ReActNet's two-step training with a teacher, end to end, on a subset of CIFAR-10
(the first ``--train_images`` training images and ``--test_images`` test images, written in
CIFAR-10's own on-disk format), using the ReActNet ResNet-18 recipes with the network shrunk to this CPU
(CIFAR stem, widths 16-128) and every step on the same budget:

1. teacher: the same network with real weights and activations, cross-entropy;
2. step 1 (``configs/reactnet/reactnet_r18_step1.yaml``): binary activations, real weights,
   distributional loss from the teacher, weight decay 1e-5 on conv weights;
3. step 2 (``configs/reactnet/reactnet_r18_step2.yaml``): 1-bit, initialised from step 1's
   checkpoint, weight decay 0, same teacher; the load is checked tensor by tensor;
4. control: step 2 from scratch (no step 1), side by side with 3.

    python benchmarks/recipes_cifar10.py runs --data_path /work/shared/data --epochs 2 --threads 1
    python benchmarks/recipes_cifar10.py two_stage --data_path /work/shared/data --train_images 10000 --epochs 3
"""
from __future__ import annotations

import argparse
import json
import shlex
import time
from pathlib import Path

import torch
import yaml

from onebit.data.formats import Split, find_folder, read_cifar, write_cifar10
from onebit.train.config import load_recipe

REPO = Path(__file__).resolve().parent.parent
DEFAULT_RECIPES = [
    "configs/rbnn/cifar10_resnet20_1w1a_400ep.yaml",
    "configs/rbnn/cifar10_resnet20_bireal_1w1a_400ep.yaml",
    "configs/irnet/cifar10_resnet20_1w1a.yaml",
]
# The two-stage network: ReActNet ResNet-18 blocks at CIFAR scale.
SMALL_REACTNET = {"stem": "cifar", "widths": [16, 32, 64, 128]}


def train(argv: list[str], threads: int) -> dict:
    """``onebit train ARGV`` in this process; prints the equivalent shell command first."""
    from onebit.train import run

    print(f"\n$ OMP_NUM_THREADS={threads} onebit train {shlex.join(argv)}", flush=True)
    return run(argv)


def run_recipes(args) -> list[dict]:
    rows = []
    for recipe in args.recipes:
        name = Path(recipe).stem
        argv = ["--config", recipe, "--data_path", args.data_path, "--epochs", str(args.epochs),
                "--results_dir", args.results_dir, "--save", name, "--print_freq", "0", "--time_estimate", "0"]
        result = train(argv, args.threads)
        target = load_recipe(REPO / recipe).get("target_top1")
        rows.append({"recipe": recipe, "epochs": args.epochs, "best_top1": result["best_top1"],
                     "final_top1": result["final_top1"], "seconds": result["seconds"], "target_top1": target,
                     "command": f"OMP_NUM_THREADS={args.threads} onebit train {shlex.join(argv)}"})
    print("\n| recipe | epochs | best top-1 | final top-1 | seconds | paper (full schedule) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['recipe']} | {r['epochs']} | {r['best_top1']:.2f} | {r['final_top1']:.2f} | {r['seconds']:.0f} "
              f"| {r['target_top1']} |")
    return rows


def write_cifar10_subset(data_path: str, out: Path, train_images: int, test_images: int) -> Path:
    """The first ``train_images`` training and ``test_images`` test images, as CIFAR-10 pickles."""
    source = find_folder(data_path, ["cifar-10-batches-py"], "data_batch_1", "cifar10", "cifar-10-batches-py")
    train, test = read_cifar(source, "train", 10), read_cifar(source, "test", 10)
    write_cifar10(out / "cifar-10-batches-py", Split(train.images[:train_images], train.labels[:train_images]),
                  Split(test.images[:test_images], test.labels[:test_images]))
    return out


def recipe_file(path: Path, base: str | None, **overrides) -> str:
    """A recipe that inherits ``base`` (a file of configs/) and overrides keys."""
    body = ({"_base_": str(REPO / base)} if base else {}) | overrides
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return str(path)


def check_stage1_load(step2_argv: list[str], step1_ckpt: Path) -> dict:
    """Build the step-2 network as the engine does, load step 1 into it, and compare every tensor."""
    from onebit.data import build_data
    from onebit.models.config import build_model
    from onebit.train.config import resolve
    from onebit.train.stages import load_stage1

    config = resolve(step2_argv)
    info = build_data(config["dataset"], config["data_path"], batch_size=config["batch_size"]).info
    model = build_model(config, *info.shape)
    loaded = load_stage1(model, step1_ckpt)
    saved = torch.load(step1_ckpt, map_location="cpu", weights_only=True)["model"]
    own = model.state_dict()
    different = [k for k in loaded.loaded if not torch.equal(own[k], saved[k])]
    if different:
        raise AssertionError(f"step 2 does not hold step 1's tensors: {different[:5]}")
    return {"loaded": len(loaded.loaded), "new_quantizer_state": len(loaded.new), "step1_tensors": len(saved)}


def run_two_stage(args) -> dict:
    out = Path(args.results_dir)
    data = str(write_cifar10_subset(args.data_path, out / "data", args.train_images, args.test_images))
    common = dict(dataset="cifar10", model_kwargs=SMALL_REACTNET, epochs=args.epochs, batch_size=args.batch_size,
                  batch_size_test=500, lr=args.lr, print_freq=0, time_estimate=0, results_dir=str(out))
    teacher = recipe_file(out / "teacher.yaml", None, model="reactnet_r18", a32=True, w32=True, optimizer="adam",
                          lr_type="linear", weight_decay=0.0, save="teacher",
                          description="real-valued teacher: the student's network without binarization", **common)
    teacher_ckpt = str(out / "teacher" / "checkpoint.pth")
    distill = dict(teacher="reactnet_r18", teacher_ckpt=teacher_ckpt)
    step1 = recipe_file(out / "step1.yaml", "configs/reactnet/reactnet_r18_step1.yaml", save="step1",
                        **distill, **common)
    step1_ckpt = out / "step1" / "checkpoint.pth"
    step2 = recipe_file(out / "step2.yaml", "configs/reactnet/reactnet_r18_step2.yaml", save="step2",
                        stage1=str(step1_ckpt), **distill, **common)
    results = {"teacher": train(["--config", teacher, "--data_path", data], args.threads)}
    results["step1"] = train(["--config", step1, "--data_path", data], args.threads)
    step2_argv = ["--config", step2, "--data_path", data]
    results["stage1_load"] = check_stage1_load(step2_argv, step1_ckpt)
    print(f"stage-2 load: {results['stage1_load']}", flush=True)
    results["step2"] = train(step2_argv, args.threads)
    scratch = recipe_file(out / "step2_scratch.yaml", "configs/reactnet/reactnet_r18_step2.yaml", save="step2_scratch",
                          stage1=None, **distill, **common)
    results["step2_from_scratch"] = train(["--config", scratch, "--data_path", data], args.threads)
    print(f"\nCIFAR-10, first {args.train_images} training images, first {args.test_images} test images, "
          f"{args.epochs} epochs per run")
    print("| run | best top-1 | final top-1 | seconds |\n|---|---|---|---|")
    for key in ("teacher", "step1", "step2", "step2_from_scratch"):
        r = results[key]
        print(f"| {key} | {r['best_top1']:.2f} | {r['final_top1']:.2f} | {r['seconds']:.0f} |")
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("job", choices=("runs", "two_stage"))
    p.add_argument("--data_path", default="/work/shared/data", help="folder holding cifar-10-batches-py")
    p.add_argument("--results_dir", default="/tmp/onebit_recipes_cifar10")
    p.add_argument("--threads", type=int, default=1, help="torch threads (one per free core on a shared CPU)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--recipes", nargs="+", default=DEFAULT_RECIPES,
                   help="runs: recipe files (paths from the repo root)")
    p.add_argument("--train_images", type=int, default=10000, help="two_stage: size of the training subset")
    p.add_argument("--test_images", type=int, default=10000, help="two_stage: size of the test subset")
    p.add_argument("--batch_size", type=int, default=128, help="two_stage: batch size of every step")
    p.add_argument("--lr", type=float, default=1e-3, help="two_stage: Adam learning rate of every step")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    Path(args.results_dir).mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    results = run_recipes(args) if args.job == "runs" else run_two_stage(args)
    path = Path(args.results_dir) / f"{args.job}.json"
    path.write_text(json.dumps(results, indent=2, default=str))
    print(f"\n{args.job}: {time.time() - t0:.0f}s in all; results in {path}")


if __name__ == "__main__":
    main()
