"""Top-1 of checkpoints written by the seeds' official code: their own evaluation vs ``onebit train -e``.

The official repositories are not part of onebit: clone them into a scratch folder first, named
``lmbxmu+RBNN``, ``htqin+IR-Net``, ``liuzechun+ReActNet`` and ``lucifer443+BinaryNeuralNetwork``.
This script runs their code on the CPU without editing their files:

* all: ``.cuda()`` becomes a no-op, CUDA tensor types map to CPU ones, ``torch.load`` maps to the CPU.
* RBNN ``cifar/main.py``: DALI (ImageNet only) is stubbed, torchvision's CIFAR-10 md5 check is skipped
  (the shared copy has no ``filenames`` key, same pixels), the training split is cut to its first N images,
  its ``accuracy`` uses ``reshape`` where it ``view``s a non-contiguous slice.
* IR-Net ``CIFAR-10/ResNet20/1w1a/trainer.py``: four in-memory source fixes it needs on Python 3 / PyTorch 2
  (``async=`` is a keyword, ``loss.data[0]`` of a 0-dim tensor, ``correct[:k].view`` of a non-contiguous
  tensor, and ``save_checkpoint`` whose ``torch.save`` is commented out).
* ReActNet ``mobilenet/{1_step1,2_step2}/train.py`` (ImageNet folders): in-memory source fixes: no exit
  without a GPU; the teacher is an *untrained* torchvision ResNet-34 (its pretrained weights are a download,
  impossible offline); ``CLASSES`` and the student's classifier sized to the fixture's classes; ``accuracy``
  with ``reshape``. Step 2 starts from step 1's ``checkpoint.pth.tar`` as its ``run.sh`` does.
* seed 002 (mmclassification 0.11 fork) ``tools/train.py`` / ``tools/test.py``: run unchanged with
  ``--device cpu`` on configs written here (:data:`MMCLS_RUNS`) that inherit ``configs/baseline/irnet/irnet_r18.py``
  and ``configs/baseline/reactnet/reactnet_r18_step2.py`` and set the fixture data (its own pillow-resize
  ImageNet pipelines of ``imagenet_bs64_pil_resize.py``), 10 classes and a short schedule; ReActNet-18 step 2
  trains as an ``ImageClassifier`` without its teacher (a pretrained ResNet-34, a download) and from scratch
  (no step-1 file). Needs mmcv 1.3-1.5 (``--mmcls_python``: a separate venv with torch, ``MMCV_WITH_OPS=0 pip
  install --no-build-isolation mmcv==1.5.0`` (setuptools < 70), ``yapf==0.32.0``, matplotlib), never onebit's.

ReActNet and mmcls train and test on a fixture-sized ImageNet-style folder made here from CIFAR-10
(``<out>/folder/{train,val}/<class>/*.png``, the first N images per class of ``data_batch_1`` and
``test_batch``; PNG so that PIL and OpenCV decode the same pixels), evaluated at 224x224 (resize 256,
centre crop) as their ImageNet test pipelines do.

    python benchmarks/official_checkpoints.py --scratch /work/scratch --data /work/shared/data \\
        --out /work/scratch/out --mmcls_python /work/scratch/mmvenv/bin/python

Steps per source: train for a few epochs; evaluate the file it wrote with its own code (RBNN ``main.py -e``,
IR-Net ``trainer.py -e -b 100`` on the full CIFAR-10 test set -- its val loader drops the last partial batch;
mmcls ``tools/test.py``; ReActNet: the validation its ``train.py`` runs right before it saves
``checkpoint.pth.tar``, read from its log); evaluate the same file with ``onebit train -e``; print both.
"""
from __future__ import annotations

import argparse
import functools
import os
import pickle
import re
import runpy
import shutil
import subprocess
import sys
import types
from pathlib import Path
from typing import NamedTuple

PY = sys.executable
SOURCES = ("rbnn", "irnet", "reactnet", "mmcls")


def _cpu_shims(train_subset: int) -> None:
    import torch
    import torchvision

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.nn.Module.cuda = lambda self, *a, **k: self
    tensor_type, module_type = torch.Tensor.type, torch.nn.Module.type
    cpu = lambda t: t.replace(".cuda", "") if isinstance(t, str) else t  # noqa: E731
    torch.Tensor.type = lambda self, t=None, *a, **k: tensor_type(self) if t is None else tensor_type(self, cpu(t), *a, **k)
    torch.nn.Module.type = lambda self, t: module_type(self, cpu(t))
    torch.cuda.is_available = lambda: False
    load = torch.load  # their files hold a list of Parameters and argparse values: trusted, written here
    torch.load = lambda *a, **k: load(*a, **{"weights_only": False, "map_location": "cpu", **k})
    torchvision.datasets.CIFAR10._check_integrity = lambda self: True
    if train_subset:
        init = torchvision.datasets.CIFAR10.__init__

        def cut(self, *a, **k):
            init(self, *a, **k)
            if self.train:
                self.data, self.targets = self.data[:train_subset], self.targets[:train_subset]

        torchvision.datasets.CIFAR10.__init__ = cut


def _accuracy(output, target, topk=(1,), keepdim=False):
    """The seeds' ``accuracy`` with ``reshape`` where they ``view`` a non-contiguous slice."""
    maxk, n = max(topk), target.size(0)
    pred = output.topk(maxk, 1, True, True)[1].t()
    correct = pred.eq(target.view(1, -1).expand_as(pred))
    return [correct[:k].reshape(-1).float().sum(0, keepdim=keepdim).mul_(100.0 / n) for k in topk]


IRNET_FIXES = [("async=True", "non_blocking=True"), ("loss.data[0]", "loss.item()"),
               ("top1.update(prec1[0]", "top1.update(prec1.item()"), ("correct[:k].view(-1)", "correct[:k].reshape(-1)"),
               ("    # torch.save(state, filename)\n    pass", "    torch.save(state, filename)")]
REACTNET_FIXES = [  # (old, new); {classes} is the fixture's class count
    ("    if not torch.cuda.is_available():\n        sys.exit(1)\n", ""),
    ("models.__dict__[args.teacher](pretrained=True)", "models.__dict__[args.teacher](num_classes=CLASSES)"),
    ("CLASSES = 1000", "CLASSES = {classes}"),
    ("model_student = reactnet()", "model_student = reactnet(num_classes=CLASSES)"),
]


def _fixed_source(script: str, fixes: list[tuple[str, str]]) -> str:
    source = Path(script).read_text()
    for old, new in fixes:
        if old not in source:
            raise SystemExit(f"{script} has changed: {old!r} not found")
        source = source.replace(old, new)
    return source


def run_official(kind: str, script: str, argv: list[str], train_subset: int) -> None:
    """Run an official script in this process (``_official`` sub-command)."""
    _cpu_shims(train_subset)
    folder = Path(script).parent.resolve()
    root = {"reactnet": folder.parents[1], "mmcls": folder.parent}.get(kind, folder)  # the repository
    sys.path[:0] = [str(folder), str(root)]
    os.chdir(root if kind == "mmcls" else folder)
    sys.argv = [script, *argv]
    if kind == "rbnn":
        for name in ("nvidia", "nvidia.dali", "nvidia.dali.ops", "nvidia.dali.types", "nvidia.dali.pipeline",
                     "nvidia.dali.plugin", "nvidia.dali.plugin.pytorch"):  # imported by its ImageNet loader
            sys.modules[name] = types.ModuleType(name)
            sys.modules[name].__getattr__ = lambda attr, name=name: sys.modules.get(f"{name}.{attr}", object)
        import utils.common

        utils.common.accuracy = _accuracy
        runpy.run_path(script, run_name="__main__")
    elif kind == "mmcls":
        runpy.run_path(script, run_name="__main__")
    elif kind == "irnet":
        exec(compile(_fixed_source(script, IRNET_FIXES), script, "exec"), {"__name__": "__main__", "__file__": script})
    else:
        import utils.utils

        utils.utils.accuracy = functools.partial(_accuracy, keepdim=True)
        classes = len([d for d in (Path(argv[argv.index("--data") + 1]) / "train").iterdir() if d.is_dir()])
        fixes = [(old, new.format(classes=classes)) for old, new in REACTNET_FIXES]
        exec(compile(_fixed_source(script, fixes), script, "exec"), {"__name__": "__main__", "__file__": script})


def _official(kind: str, script: Path, argv: list[str], subset: int, log: Path, python: str = PY) -> str:
    cmd = [python, str(Path(__file__).resolve()), "_official", kind, str(script), str(subset), *argv]
    with open(log, "w") as f:
        subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, check=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return log.read_text()


def _onebit_top1_top5(checkpoint: Path, data: Path, *flags: str) -> tuple[float, float]:
    out = subprocess.run([PY, "-m", "onebit", "train", "-e", str(checkpoint), "--data_path", str(data), "--gpus", "cpu",
                          "--workers", "0", *flags], capture_output=True, text=True, check=True).stdout
    m = re.search(r"top-1 ([\d.]+)%  top-5 ([\d.]+)%", out)
    return float(m.group(1)), float(m.group(2))


def make_image_folder(cifar: Path, out: Path, train_per_class: int, val_per_class: int) -> Path:
    """``out/{train,val}/<class>/<index>.png``: the first N images of each class of CIFAR-10's ``data_batch_1``
    (train) and ``test_batch`` (val)."""
    import numpy as np
    from PIL import Image

    names = pickle.loads((cifar / "batches.meta").read_bytes(), encoding="latin1")["label_names"]
    for split, batch, per_class in (("train", "data_batch_1", train_per_class), ("val", "test_batch", val_per_class)):
        d = pickle.loads((cifar / batch).read_bytes(), encoding="latin1")
        images = np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        taken = dict.fromkeys(range(len(names)), 0)
        for i, (image, label) in enumerate(zip(images, d["labels"])):
            if taken[label] < per_class:
                taken[label] += 1
                (out / split / names[label]).mkdir(parents=True, exist_ok=True)
                Image.fromarray(image).save(out / split / names[label] / f"{i:05d}.png")
    return out


MMCLS_CONFIG = """\
# seed 002's {name} baseline on a fixture-sized ImageNet-style folder (written by onebit's
# benchmarks/official_checkpoints.py): data, class count, schedule length and what the note says differ.
_base_ = [{base!r}]
img_norm_cfg = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', size=224, backend='pillow'),
    dict(type='RandomFlip', flip_prob=0.5, direction='horizontal'),
    dict(type='Normalize', **img_norm_cfg),
    dict(type='ImageToTensor', keys=['img']),
    dict(type='ToTensor', keys=['gt_label']),
    dict(type='Collect', keys=['img', 'gt_label'])
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', size=(256, -1), backend='pillow'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='Normalize', **img_norm_cfg),
    dict(type='ImageToTensor', keys=['img']),
    dict(type='Collect', keys=['img'])
]
data = dict(
    samples_per_gpu=25, workers_per_gpu=0,
    train=dict(data_prefix='{folder}/train', pipeline=train_pipeline),
    val=dict(data_prefix='{folder}/val', ann_file=None, pipeline=test_pipeline),
    test=dict(data_prefix='{folder}/val', ann_file=None, pipeline=test_pipeline))
runner = dict(max_epochs={epochs})
log_config = dict(interval=4)
work_dir = '{work_dir}'
{extra}"""
MMCLS_RUNS = {  # name: (baseline config, what else the fixture config sets)
    "irnet_r18": ("irnet/irnet_r18.py", """\
model = dict(head=dict(num_classes={classes}, topk=(1, )))
optimizer = dict(lr=0.01)
lr_config = dict(warmup_iters=5)
custom_hooks = [dict(type='EDEHook', total_epoch={epochs})]
"""),
    # step 2 without its teacher (a pretrained ResNet-34, a download) and without step 1's weights
    "reactnet_r18": ("reactnet/reactnet_r18_step2.py", """\
model = dict(
    _delete_=True, type='ImageClassifier',
    backbone=dict(type='ResArch', arch='ReActNet-18', num_stages=4, out_indices=(3, ), avg_down=True,
                  binary_type=(True, True), style='pytorch'),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes={classes}, in_channels=512,
              loss=dict(type='CrossEntropyLoss', loss_weight=1.0), topk=(1, )))
load_from = None
"""),
}


class Row(NamedTuple):
    checkpoint: Path
    official_top1: float
    official_top5: float | None  # RBNN and IR-Net print top-1 only
    onebit_top1: float
    onebit_top5: float


def compare_cifar(a, out: Path) -> list[Row]:
    """RBNN resnet20_1w1a and IR-Net ResNet-20 1w1a on CIFAR-10."""
    rows = []
    rbnn = a.scratch / "lmbxmu+RBNN" / "cifar" / "main.py"
    irnet = a.scratch / "htqin+IR-Net" / "CIFAR-10" / "ResNet20" / "1w1a" / "trainer.py"
    data = a.data.resolve()
    if "rbnn" in a.only:
        ckpt = out / "rbnn_r20" / "model_best.pth.tar"
        if not a.skip_training:
            _official("rbnn", rbnn, ["--model", "resnet20_1w1a", "--dataset", "cifar10", "--data_path", str(data),
                                     "--epochs", str(a.epochs), "--workers", "0", "--results_dir", str(out),
                                     "--save", "rbnn_r20", "--Tmax", "1"], a.train_subset, out / "rbnn_train.log")
        log = _official("rbnn", rbnn, ["--model", "resnet20_1w1a", "--dataset", "cifar10", "--data_path", str(data),
                                       "--workers", "0", "-e", str(ckpt)], 0, out / "rbnn_eval.log")
        rows.append(Row(ckpt, float(re.findall(r"Validation Prec@1 ([\d.]+)", log)[-1]), None,
                        *_onebit_top1_top5(ckpt, data)))
    if "irnet" in a.only:
        ckpt = out / "irnet_r20" / "checkpoint.th"
        if not a.skip_training:
            irnet_data = irnet.parent / "data"  # trainer.py reads ./data
            if not irnet_data.exists():
                irnet_data.symlink_to(data)
            _official("irnet", irnet, ["--epochs", str(a.epochs), "--save-every", "1", "-j", "0",
                                       "--save-dir", str(out / "irnet_r20")], a.train_subset, out / "irnet_train.log")
        log = _official("irnet", irnet, ["--resume", str(ckpt), "-e", "-b", "100", "-j", "0"], 0,
                        out / "irnet_eval.log")
        rows.append(Row(ckpt, float(re.findall(r"\* Prec@1 ([\d.]+)", log)[-1]), None, *_onebit_top1_top5(ckpt, data)))
    return rows


def compare_mmcls(a, out: Path, folder: Path) -> list[Row]:
    """Seed 002's irnet_r18 and reactnet_r18 (step 2, as an ImageClassifier) trained by its tools/train.py,
    tested by its tools/test.py, for every epoch's file."""
    repo = a.scratch / "lucifer443+BinaryNeuralNetwork"
    classes = len([d for d in (folder / "train").iterdir() if d.is_dir()])
    rows = []
    for name, (base, extra) in MMCLS_RUNS.items():
        config, work = out / "mmcls" / f"{name}_fixture.py", out / "mmcls" / name
        if not a.skip_training:
            config.parent.mkdir(parents=True, exist_ok=True)
            config.write_text(MMCLS_CONFIG.format(
                name=name, base=str(repo / "configs" / "baseline" / base), folder=folder, epochs=a.fixture_epochs,
                work_dir=work, extra=extra.format(classes=classes, epochs=a.fixture_epochs)))
            _official("mmcls", repo / "tools" / "train.py", [str(config), "--device", "cpu", "--seed", "166",
                                                             "--no-validate"], 0, out / f"mmcls_{name}_train.log",
                      a.mmcls_python)
        for epoch in range(1, a.fixture_epochs + 1):
            ckpt = work / f"epoch_{epoch}.pth"
            log = _official("mmcls", repo / "tools" / "test.py", [str(config), str(ckpt), "--metrics", "accuracy"], 0,
                            out / f"mmcls_{name}_test_epoch{epoch}.log", a.mmcls_python)
            top1, top5 = (float(re.findall(rf"accuracy_top-{k} : ([\d.]+)", log)[-1]) for k in (1, 5))
            rows.append(Row(ckpt, top1, top5, *_onebit_top1_top5(ckpt, folder, "--dataset", "imagenet")))
    return rows


def compare_reactnet(a, out: Path, folder: Path) -> list[Row]:
    """ReActNet-A step 1 and step 2 trained (and validated) by liuzechun/ReActNet's train.py."""
    repo = a.scratch / "liuzechun+ReActNet" / "mobilenet"
    rows = []
    for step, script in (("step1", repo / "1_step1" / "train.py"), ("step2", repo / "2_step2" / "train.py")):
        save, log = out / "reactnet" / step, out / f"reactnet_{step}.log"
        if not a.skip_training:
            if save.exists():
                shutil.rmtree(save)  # train.py resumes from save/checkpoint.pth.tar when it exists
            save.mkdir(parents=True)
            if step == "step2":  # run.sh: cp ../1_step1/models/checkpoint.pth.tar ./models/checkpoint_ba.pth.tar
                shutil.copyfile(out / "reactnet" / "step1" / "checkpoint.pth.tar", save / "checkpoint_ba.pth.tar")
            _official("reactnet", script, ["--data", str(folder), "--save", str(save), "--batch_size", "10",
                                           "--epochs", str(a.fixture_epochs), "--learning_rate", "1e-3",
                                           "--workers", "0"], 0, log)
        top1, top5 = map(float, re.findall(r"\* acc@1 ([\d.]+) acc@5 ([\d.]+)", log.read_text())[-1])  # the file's
        ckpt = save / "checkpoint.pth.tar"
        rows.append(Row(ckpt, top1, top5, *_onebit_top1_top5(ckpt, folder, "--dataset", "imagenet")))
    return rows


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_official":
        kind, script, subset, *argv = sys.argv[2:]
        run_official(kind, script, argv, int(subset))
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scratch", type=Path, required=True, help="folder holding the official repositories")
    p.add_argument("--data", type=Path, required=True, help="folder holding cifar-10-batches-py")
    p.add_argument("--out", type=Path, required=True, help="folder for the official runs and logs")
    p.add_argument("--only", default=",".join(SOURCES), help=f"comma-separated subset of {','.join(SOURCES)}")
    p.add_argument("--train_subset", type=int, default=5000, help="CIFAR-10: train on the first N images")
    p.add_argument("--epochs", type=int, default=2, help="CIFAR-10 epochs (RBNN, IR-Net)")
    p.add_argument("--fixture_train", type=int, default=30, help="fixture folder: train images per class")
    p.add_argument("--fixture_val", type=int, default=50, help="fixture folder: val images per class")
    p.add_argument("--fixture_epochs", type=int, default=2, help="fixture epochs (ReActNet steps, mmcls)")
    p.add_argument("--mmcls_python", default=PY, help="python with mmcv 1.3-1.5 for seed 002's code")
    p.add_argument("--skip_training", action="store_true", help="evaluate the checkpoints already in --out")
    a = p.parse_args()
    a.only = set(a.only.split(","))
    if a.only - set(SOURCES):
        p.error(f"--only: unknown {', '.join(sorted(a.only - set(SOURCES)))}")
    out = a.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    a.scratch, a.data = a.scratch.resolve(), a.data.resolve()
    folder = out / "folder"
    if a.only & {"reactnet", "mmcls"} and not a.skip_training:
        if folder.exists():
            shutil.rmtree(folder)
        make_image_folder(a.data / "cifar-10-batches-py", folder, a.fixture_train, a.fixture_val)
    rows = compare_cifar(a, out)
    if "mmcls" in a.only:
        rows += compare_mmcls(a, out, folder)
    if "reactnet" in a.only:
        rows += compare_reactnet(a, out, folder)
    width = max(len(str(r.checkpoint)) for r in rows)
    print(f"{'checkpoint':<{width}} {'official top-1':>15} {'onebit -e top-1':>16} {'official top-5':>15} "
          f"{'onebit -e top-5':>16}")
    for r in rows:
        top5 = f"{r.official_top5:>15.2f}" if r.official_top5 is not None else f"{'-':>15}"
        print(f"{str(r.checkpoint):<{width}} {r.official_top1:>15.2f} {r.onebit_top1:>16.2f} {top5} {r.onebit_top5:>16.2f}")


if __name__ == "__main__":
    main()
