"""Top-1 of checkpoints written by the seeds' official code: their own evaluation vs ``onebit train -e``.

The official repositories are not part of onebit: clone them into a scratch folder first
(lmbxmu/RBNN and htqin/IR-Net, named ``lmbxmu+RBNN`` and ``htqin+IR-Net`` or given by flag).
This script runs their code on the CPU without editing their files: ``.cuda()`` becomes a
no-op, CUDA tensor types map to CPU ones, DALI (ImageNet only) is stubbed, torchvision's
CIFAR-10 md5 check is skipped (the shared copy has no ``filenames`` key, same pixels), the
training split can be cut to its first N images, and IR-Net's ``trainer.py`` gets four
in-memory source fixes it needs on Python 3 / PyTorch 2 (``async=`` is a keyword,
``loss.data[0]`` of a 0-dim tensor, ``correct[:k].view`` of a non-contiguous tensor, and
``save_checkpoint`` whose ``torch.save`` is commented out). RBNN's ``accuracy`` gets the same
``view`` -> ``reshape`` fix. Nothing touches the models or the evaluation.

    python benchmarks/official_checkpoints.py --scratch /work/scratch --data /work/shared/data \\
        --train_subset 5000 --epochs 2 --out /work/scratch/out

Steps: train RBNN ``resnet20_1w1a`` (``main.py``) and IR-Net ResNet-20 1w1a (``trainer.py``)
for ``--epochs`` on the subset; evaluate the checkpoint each wrote with its own code on the
full 10,000-image test set (IR-Net's val loader drops the last partial batch, so it runs with
``-b 100``); evaluate the same files with ``onebit train -e``; print both top-1 values.
"""
from __future__ import annotations

import argparse
import os
import re
import runpy
import subprocess
import sys
import types
from pathlib import Path

PY = sys.executable


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
    for name in ("nvidia", "nvidia.dali", "nvidia.dali.ops", "nvidia.dali.types", "nvidia.dali.pipeline",
                 "nvidia.dali.plugin", "nvidia.dali.plugin.pytorch"):
        sys.modules[name] = types.ModuleType(name)
        sys.modules[name].__getattr__ = lambda attr, name=name: sys.modules.get(f"{name}.{attr}", object)
    torchvision.datasets.CIFAR10._check_integrity = lambda self: True
    if train_subset:
        init = torchvision.datasets.CIFAR10.__init__

        def cut(self, *a, **k):
            init(self, *a, **k)
            if self.train:
                self.data, self.targets = self.data[:train_subset], self.targets[:train_subset]

        torchvision.datasets.CIFAR10.__init__ = cut


def _accuracy(output, target, topk=(1,)):
    """The seeds' ``accuracy`` with ``reshape`` where they ``view`` a non-contiguous slice."""
    maxk, n = max(topk), target.size(0)
    pred = output.topk(maxk, 1, True, True)[1].t()
    correct = pred.eq(target.view(1, -1).expand_as(pred))
    return [correct[:k].reshape(-1).float().sum(0).mul_(100.0 / n) for k in topk]


IRNET_FIXES = [("async=True", "non_blocking=True"), ("loss.data[0]", "loss.item()"),
               ("top1.update(prec1[0]", "top1.update(prec1.item()"), ("correct[:k].view(-1)", "correct[:k].reshape(-1)"),
               ("    # torch.save(state, filename)\n    pass", "    torch.save(state, filename)")]


def run_official(kind: str, script: str, argv: list[str], train_subset: int) -> None:
    """Run an official script in this process (``_official`` sub-command)."""
    _cpu_shims(train_subset)
    folder = str(Path(script).parent.resolve())
    sys.path.insert(0, folder)
    os.chdir(folder)
    sys.argv = [script, *argv]
    if kind == "rbnn":
        import utils.common

        utils.common.accuracy = _accuracy
        runpy.run_path(script, run_name="__main__")
        return
    source = Path(script).read_text()
    for old, new in IRNET_FIXES:
        if old not in source:
            raise SystemExit(f"IR-Net trainer.py has changed: {old!r} not found")
        source = source.replace(old, new)
    exec(compile(source, script, "exec"), {"__name__": "__main__", "__file__": script})


def _official(kind: str, script: Path, argv: list[str], subset: int, log: Path) -> str:
    cmd = [PY, __file__, "_official", kind, str(script), str(subset), *argv]
    with open(log, "w") as f:
        subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, check=True)
    return log.read_text()


def _onebit_top1(checkpoint: Path, data: Path) -> float:
    out = subprocess.run([PY, "-m", "onebit", "train", "-e", str(checkpoint), "--data_path", str(data), "--gpus", "cpu"],
                         capture_output=True, text=True, check=True).stdout
    return float(re.search(r"top-1 ([\d.]+)%", out).group(1))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_official":
        kind, script, subset, *argv = sys.argv[2:]
        run_official(kind, script, argv, int(subset))
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scratch", type=Path, required=True, help="folder holding lmbxmu+RBNN and htqin+IR-Net")
    p.add_argument("--data", type=Path, required=True, help="folder holding cifar-10-batches-py")
    p.add_argument("--out", type=Path, required=True, help="folder for the official runs and logs")
    p.add_argument("--train_subset", type=int, default=5000, help="train on the first N images (default 5000)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--skip_training", action="store_true", help="evaluate the checkpoints already in --out")
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    rbnn = a.scratch / "lmbxmu+RBNN" / "cifar" / "main.py"
    irnet = a.scratch / "htqin+IR-Net" / "CIFAR-10" / "ResNet20" / "1w1a" / "trainer.py"
    data = a.data.resolve()
    if not a.skip_training:
        _official("rbnn", rbnn, ["--model", "resnet20_1w1a", "--dataset", "cifar10", "--data_path", str(data),
                                 "--epochs", str(a.epochs), "--workers", "0", "--results_dir", str(a.out),
                                 "--save", "rbnn_r20", "--Tmax", "1"], a.train_subset, a.out / "rbnn_train.log")
        irnet_data = irnet.parent / "data"  # trainer.py reads ./data
        if not irnet_data.exists():
            irnet_data.symlink_to(data)
        _official("irnet", irnet, ["--epochs", str(a.epochs), "--save-every", "1", "-j", "0",
                                   "--save-dir", str(a.out / "irnet_r20")], a.train_subset, a.out / "irnet_train.log")
    rbnn_ckpt, irnet_ckpt = a.out / "rbnn_r20" / "model_best.pth.tar", a.out / "irnet_r20" / "checkpoint.th"
    log = _official("rbnn", rbnn, ["--model", "resnet20_1w1a", "--dataset", "cifar10", "--data_path", str(data),
                                   "--workers", "0", "-e", str(rbnn_ckpt)], 0, a.out / "rbnn_eval.log")
    rbnn_official = float(re.findall(r"Validation Prec@1 ([\d.]+)", log)[-1])
    log = _official("irnet", irnet, ["--resume", str(irnet_ckpt), "-e", "-b", "100", "-j", "0"], 0,
                    a.out / "irnet_eval.log")
    irnet_official = float(re.findall(r"\* Prec@1 ([\d.]+)", log)[-1])
    print(f"{'checkpoint':<48} {'official top-1':>15} {'onebit -e top-1':>16} {'difference':>11}")
    for ckpt, official in ((rbnn_ckpt, rbnn_official), (irnet_ckpt, irnet_official)):
        ours = _onebit_top1(ckpt, data)
        print(f"{str(ckpt):<48} {official:>15.2f} {ours:>16.2f} {ours - official:>+11.2f}")


if __name__ == "__main__":
    main()
