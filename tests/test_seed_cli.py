"""The seeds' own command lines: seed 003's trainer flags, seed 002's dist_train.sh / dist_test.sh,
seed 000's ImageNet MobileNets."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from onebit import cli
from onebit.models import checkpoint as model_ckpt
from onebit.train import run
from onebit.train.config import resolve
from onebit.train.precision import native_bfloat16

from helpers import ONE_THREAD_ENV, assert_same_weights, checkpoint_weights, run_metrics

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--dataset", "digits", "--model", "cnn_small_1w1a", "-b", "64", "--print_freq", "0", "--seed", "3"]


def test_seed003_command_line_resolves(tmp_path):
    # seed 003's CIFAR-10 line, verbatim, with its optional flags as it writes them
    c = resolve(f"--save-dir {tmp_path}/cifar10_train_model --epochs 200 --save-every 5 --half "
                "-b 128 -p 100 --warm_up True".split())
    assert (c["results_dir"], c["save"]) == (str(tmp_path), "cifar10_train_model")
    assert c["epochs"] == 200 and c["save_every"] == 5 and c["amp"] and c["warm_up"] is True
    assert c["batch_size"] == 128 and c["print_freq"] == 100 and "save_dir" not in c
    assert resolve(["--warm_up", "False"])["warm_up"] is False and resolve(["--warm_up"])["warm_up"] is True
    assert resolve([])["amp"] is None and resolve(["--amp"])["amp"] is True and resolve(["--no-amp"])["amp"] is False


@pytest.mark.parametrize("argv, message", [
    (["-e"], "-e without a FILE evaluates the checkpoint given as --model FILE"),
    (["--model", "tests/conftest.py"], "a checkpoint file is only accepted with -e"),
    (["--warm_up", "Maybe"], "expected True or False, got 'Maybe'"),
])
def test_seed003_misuse_is_one_clear_line(argv, message, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit) as exit_:  # what `python -m onebit train ...` runs
        cli.main(["train", *argv])
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_seed003_save_every_half_and_evaluate_model_file(tmp_path):
    folder = tmp_path / "digits_train_model"
    result = run([*FAST, "--save-dir", str(folder), "--epochs", "3", "--save-every", "2", "--half",
                  "--warm_up", "True", "--optimizer", "adam", "--lr", "0.01"])
    assert result["run_dir"] == str(folder) and result["best_top1"] > 50  # chance is 10%
    kept = sorted(p.name for p in folder.glob("checkpoint_epoch*.pth"))
    assert kept == ["checkpoint_epoch2.pth"]
    assert model_ckpt.load(folder / "checkpoint_epoch2.pth")["epoch"] == 2
    assert model_ckpt.load(folder / "checkpoint.pth")["epoch"] == 3
    expected = "autocast to bfloat16" if native_bfloat16(torch.device("cpu")) else "has no native bfloat16"
    assert expected in (folder / "log.txt").read_text()
    lrs = [m["lr"] for m in run_metrics(folder)]
    assert lrs == pytest.approx([0.002, 0.004, 0.006])  # --warm_up True: lr (e+1)/5
    # seed 003's evaluation line: -e --model FILE (the model definition comes from the file)
    evaluated = run(["--dataset", "digits", "-e", "--model", str(folder / "model_best.pth")])
    assert evaluated["test_top1"] == pytest.approx(result["best_top1"])


@pytest.mark.skipif(not native_bfloat16(torch.device("cpu")), reason="this CPU has no AVX-512 BF16 / AMX")
def test_amp_runs_binary_convs_in_bfloat16_with_float32_weights():
    from onebit.models import create_model
    from onebit.train.precision import MixedPrecision

    model = create_model("cnn_small_1w1a", 10, in_channels=1, image_size=8)
    dtypes = []
    conv = next(m for m in model.modules() if getattr(m, "weight_quantizer", None) is not None)
    conv.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    precision = MixedPrecision(True, torch.device("cpu"))
    with precision.autocast():
        loss = model(torch.randn(4, 1, 8, 8)).float().logsumexp(1).mean()
    loss.backward()
    assert dtypes == [torch.bfloat16]
    assert conv.weight.dtype == torch.float32 and conv.weight.grad.dtype == torch.float32
    model(torch.randn(2, 1, 8, 8))
    assert dtypes[-1] == torch.float32  # outside autocast: float32


def _readme_seed_examples() -> list[str]:
    """The command lines of the README's "other seeds' command lines" block."""
    text = (ROOT / "README.md").read_text()
    block = text.split("### The other seeds' command lines", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line and not line.startswith("#")]


@pytest.mark.slow
def test_readme_seed_examples_run_as_written(tmp_path, monkeypatch):
    train003, eval003, dist_train, dist_test = _readme_seed_examples()
    for name in ("tools", "configs"):
        (tmp_path / name).symlink_to(ROOT / name)
    # seed 003: both lines resolve as written (the training line needs CIFAR-10 and 200 epochs:
    # test_seed003_save_every_half_and_evaluate_model_file runs its flags for real on digits)
    monkeypatch.chdir(tmp_path)
    c = resolve(train003.split()[2:])
    assert c["save"] == "cifar10_train_model" and c["save_every"] == 5 and c["amp"] and c["warm_up"] is True
    run([*FAST, "--epochs", "1", "--save-dir", "cifar10_train_model"])
    c = resolve(eval003.split()[2:])
    assert c["evaluate"] == "cifar10_train_model/model_best.pth" and c["model"] == "cnn_small_1w1a"
    # seed 002: both scripts for real, 2 CPU processes (training shortened to 2 epochs; mixup draws per shard)
    env = {**ONE_THREAD_ENV, "PYTHON": sys.executable,
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    shortened = ["-p", "0", "--epochs", "2", "--mixup", "0.2"]
    train = subprocess.run(["bash", "-c", " ".join([dist_train, *shortened])], capture_output=True, text=True,
                           env=env, cwd=tmp_path)
    printed = "\n".join(line for line in train.stderr.splitlines() if "img/s" not in line)  # no progress bars
    assert train.returncode == 0, f"{printed[:4000]}\n...\n{printed[-1500:]}"  # the ranks' messages, torchrun's
    folder = tmp_path / "work_dirs" / "cnn_small"
    assert "2 process(es)" in (folder / "log.txt").read_text()
    # One process taking the 2 shards of every global batch in turns adds the same floats in the same
    # order as 2 processes taking one each (same intra-op thread count per shard): same weights, bit for bit.
    run(["--config", dist_train.split()[1], *shortened, "--shards", "2", "--save-dir", "work_dirs/one"])
    assert_same_weights(tmp_path / "work_dirs" / "one" / "checkpoint.pth", folder / "checkpoint.pth")
    bn_gamma = checkpoint_weights(folder / "checkpoint.pth")["stem.1.weight"]
    assert not torch.equal(bn_gamma, torch.ones_like(bn_gamma)), "batch norm's parameters were not trained"
    one, two = (run_metrics(tmp_path / "work_dirs" / f) for f in ("one", "cnn_small"))
    assert [m["epoch"] for m in two] == [0, 1]
    for a, b in zip(one, two):  # the metrics' float64 sums run in another order; the test split in other batches
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-12)
        assert b["train_top1"] == a["train_top1"]
        assert b["test_loss"] == pytest.approx(a["test_loss"], rel=1e-6)
    best = max(m["test_top1"] for m in two)
    test = subprocess.run(["bash", "-c", dist_test], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert test.returncode == 0, test.stderr[-2000:]
    lines = [l for l in test.stdout.splitlines() if "model_best.pth:" in l]
    assert len(lines) == 1, test.stdout  # printed once, by rank 0
    assert f"top-1 {best:.2f}%" in lines[0]
    usage = subprocess.run([str(ROOT / "tools" / "dist_test.sh"), "x.yaml"], capture_output=True, text=True)
    assert usage.returncode == 2 and "usage:" in usage.stderr


def _mobilenet_params(width: float, depthwise: bool, classes: int) -> int:
    """MobileNetV1 layout x width: stem conv3x3 + BN, blocks (3x3 + BN, k 1x1 + BN), FC."""
    from onebit.models.mobilenet import MOBILENET_V1_BLOCKS

    cin = int(32 * width)
    n = 3 * cin * 9 + 2 * cin
    for cout, _ in MOBILENET_V1_BLOCKS:
        cout = int(cout * width)
        n += (cin * 9 if depthwise else cin * cin * 9) + 2 * cin
        n += (cout // cin) * (cin * cin + 2 * cin)
        cin = cout
    return n + cin * classes + classes


@pytest.mark.parametrize("tag, width, depthwise", [("025_", 0.25, True), ("05_", 0.5, True),
                                                   ("025_noGroup_", 0.25, False), ("05_noGroup_", 0.5, False)])
def test_imagenet_mobilenets_at_224(tag, width, depthwise):
    from onebit.models import create_model

    model = create_model(f"mobilenetv1_bireal_{tag}1w1a", 1000, image_size=224, method="bnn").eval()
    assert sum(p.numel() for p in model.parameters()) == _mobilenet_params(width, depthwise, 1000)
    feats = model.features(model.stem_act(model.bn1(model.conv1(torch.zeros(1, 3, 224, 224)))))
    assert feats.shape == (1, int(1024 * width), 7, 7)
    cifar = create_model(f"mobilenetv1_bireal_{tag}1w1a", 10, method="bnn")
    assert cifar.conv1.stride == (1, 1) and model.conv1.stride == (2, 2)
