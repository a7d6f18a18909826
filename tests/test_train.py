"""The training engine: seed flags, recipes, schedules, checkpoints, exact resume, DDP."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from onebit import cli
from onebit.models import checkpoint as model_ckpt
from onebit.train import checkpoint as ckpt_io
from onebit.train import run
from onebit.train.config import build_parser, resolve
from onebit.train.optim import lr_factor

from helpers import ONE_THREAD_ENV, assert_same_weights, run_metrics

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = ["--dataset", "digits", "--model", "cnn_small_1w1a", "-b", "64", "--print_freq", "0", "--seed", "7"]
ONEBIT = [sys.executable, "-m", "onebit"]


def train_args(tmp_path: Path, *extra: str) -> list[str]:
    return [*FAST, "--results_dir", str(tmp_path), *extra]


def train_cmd(tmp_path: Path, *extra: str) -> list[str]:
    return ONEBIT + ["train", *train_args(tmp_path, *extra)]


# ---------------------------------------------------------------- flags and recipes

SEED_DEFAULTS = {  # seed 001's README (seed 000's where 001 is silent)
    "results_dir": "./results", "save": "", "resume": False, "evaluate": None, "model": "resnet20_1w1a",
    "dataset": "cifar10", "lr": 0.1, "weight_decay": 1e-4, "momentum": 0.9, "workers": 8, "epochs": 1000,
    "batch_size": 256, "batch_size_test": 128, "print_freq": 100, "time_estimate": 1, "mixup": 0.0,
    "labelsmooth": 0.0, "weight_hist": 0, "rotation_update": 1, "Tmin": 1e-2, "Tmax": 1e1, "lr_type": "cos",
    "lr_decay_step": None, "a32": False, "warm_up": False, "use_dali": False, "use_gpu": False,
    "optimizer": "sgd", "seed": 1234, "gpus": None,
}


def test_seed_flag_defaults():
    config = resolve([])  # model and Tmin/Tmax are resolved from the data set and the method
    for key, value in SEED_DEFAULTS.items():
        assert config[key] == value, key


@pytest.mark.parametrize("dataset,model", [("digits", "cnn_small_1w1a"), ("fashion-mnist", "cnn_small_1w1a"),
                                           ("cifar100", "resnet20_1w1a"), ("imagenet", "resnet18_1w1a")])
def test_default_model_is_the_data_sets_own(dataset, model):
    assert resolve(["--dataset", dataset])["model"] == model
    assert resolve(["--dataset", dataset, "--model", "vgg_small_1w1a"])["model"] == "vgg_small_1w1a"


def test_help_and_log_state_the_temperature_a_run_uses(tmp_path, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    assert "default: the method's reference value" in " ".join(capsys.readouterr().out.split())
    run([*FAST, "--method", "irnet", "--epochs", "1", "--results_dir", str(tmp_path), "--save", "t"])
    assert "temperature t: 0.1 at epoch 1, log-linear towards 10" in (tmp_path / "t" / "log.txt").read_text()


def test_seed_command_line_parses():
    # The README's RBNN CIFAR-10 command, verbatim but for the program name.
    line = ("--gpus 0 --model resnet20_1w1a --results_dir ./ --data_path /data --dataset cifar10 --epoch 400 "
            "--lr 0.1 --rotation_update 2 --Tmin 1e-2 --Tmax 1e1 --lr_type cos -b 256 -bt 128 --warm_up "
            "--mixup --labelsmooth --weight_hist 5 --a32 --use_gpu --use_dali --time_estimate 0 "
            "--lr_decay_step 30 60 90 -p 10 --workers 2 --save x -a vgg_small_1w1a")
    a = vars(build_parser().parse_args(line.split()))
    assert (a["epochs"], a["rotation_update"], a["batch_size"], a["batch_size_test"]) == (400, 2, 256, 128)
    assert a["mixup"] == 0.1 and a["labelsmooth"] == 0.1 and a["warm_up"] and a["a32"] and a["use_gpu"]
    assert a["lr_decay_step"] == [30, 60, 90] and a["print_freq"] == 10 and a["model"] == "vgg_small_1w1a"
    assert a["weight_hist"] == 5 and a["time_estimate"] == 0 and a["gpus"] == "0"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--lr_tpye", "cos"], "did you mean '--lr_type'"),
        (["--lr_type", "coss"], "did you mean 'cos'"),
        (["--model", "resnet20_1w1"], "did you mean 'resnet20_1w1a'"),
        (["--dataset", "cifar-10"], "did you mean 'cifar10'"),
        (["--optimizer", "adamw"], "did you mean 'adam'"),
    ],
)
def test_bad_flags_suggest_the_closest(argv, message, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(argv)
    assert message in capsys.readouterr().err


def test_recipe_inheritance_and_override(tmp_path):
    (tmp_path / "base.yaml").write_text("lr: 0.5\nepochs: 100\nweight_decay: 0.001\nmodel_kwargs: {width: 8}\n")
    (tmp_path / "child.yaml").write_text("_base_: base.yaml\nepochs: 20\ntarget_top1: 86.5\nlr_type: step\n")
    config = resolve(["--config", str(tmp_path / "child.yaml"), "--lr", "0.2"])
    assert config["epochs"] == 20  # child overrides base
    assert config["weight_decay"] == 0.001  # inherited
    assert config["lr"] == 0.2  # command line overrides both
    assert config["lr_type"] == "step" and config["target_top1"] == 86.5
    assert config["model_kwargs"] == {"width": 8}


def test_recipe_errors(tmp_path):
    (tmp_path / "typo.yaml").write_text("lerning_rate: 0.1\n")
    with pytest.raises(ValueError, match="unknown key 'lerning_rate'"):
        resolve(["--config", str(tmp_path / "typo.yaml")])
    (tmp_path / "bad.yaml").write_text("lr_type: cosine\n")
    with pytest.raises(ValueError, match="bad value for 'lr_type'"):
        resolve(["--config", str(tmp_path / "bad.yaml")])
    (tmp_path / "loop.yaml").write_text("_base_: loop.yaml\n")
    with pytest.raises(ValueError, match="inheritance loop"):
        resolve(["--config", str(tmp_path / "loop.yaml")])
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        resolve(["--config", str(tmp_path / "missing.yaml")])


# ---------------------------------------------------------------- schedules

def test_lr_schedules():
    assert lr_factor(0, 10, "cos") == 1.0
    assert lr_factor(5, 10, "cos") == pytest.approx(0.5)
    # warm-up: (e + 1) / 5 for five epochs, then the cosine over the remaining E - 5
    assert [lr_factor(e, 1000, "cos", warm_up=True) for e in range(5)] == [0.2, 0.4, 0.6, 0.8, 1.0]
    assert lr_factor(5, 1000, "cos", warm_up=True) == 1.0
    assert lr_factor(5 + 995 // 2, 1000, "cos", warm_up=True) == pytest.approx(0.5, abs=2e-3)
    assert [lr_factor(e, 100, "step", milestones=[30, 60]) for e in (0, 29, 30, 59, 60, 99)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.01])
    assert [lr_factor(e, 4, "linear") for e in range(4)] == [1.0, 0.75, 0.5, 0.25]


# ---------------------------------------------------------------- training, checkpoints, resume

def test_train_writes_a_complete_run_folder(tmp_path):
    result = run([*FAST, "--epochs", "2", "--results_dir", str(tmp_path), "--save", "r", "--weight_hist", "1",
                  "--optimizer", "adam", "--lr", "0.01"])
    run_dir = tmp_path / "r"
    assert result["run_dir"] == str(run_dir) and result["best_top1"] > 50  # far above 10% chance after 2 epochs
    for name in ("log.txt", "metrics.jsonl", "config.yaml", "checkpoint.pth", "model_best.pth",
                 "weight_hist/epoch_0000.png", "tensorboard"):
        assert (run_dir / name).exists(), name
    lines = run_metrics(run_dir)
    assert [l["epoch"] for l in lines] == [0, 1]
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["optimizer"] == "adam" and saved["epochs"] == 2
    state = model_ckpt.load(run_dir / "checkpoint.pth")
    assert state["epoch"] == 2 and state["model_name"] == "cnn_small_1w1a" and "optimizer" in state
    # -e evaluates the best checkpoint with the network its config describes
    evaluated = run(["--dataset", "digits", "--data_path", ".", "-e", str(run_dir / "model_best.pth")])
    assert evaluated["test_top1"] == pytest.approx(result["best_top1"])


def wait_for(proc: subprocess.Popen, ready, what: str) -> None:
    """Poll until ``ready()``; fail if the process ends first or after two minutes."""
    deadline = time.time() + 120
    while not ready():
        assert proc.poll() is None, f"training ended before {what}"
        assert time.time() < deadline, f"no {what} after 120 s"
        time.sleep(0.02)


def test_sigterm_then_sigkill_then_resume_is_bit_identical(tmp_path):
    """A run stopped by SIGTERM mid-epoch (it saves and exits cleanly), resumed, killed by SIGKILL
    in its second epoch (nothing saved) and resumed again ends with an uninterrupted run's weights."""
    # batch 16: 90 batches per epoch, so the signals land inside an epoch; mixup and label smoothing
    # add random draws and a loss option that the resumed run must continue exactly
    args = ("--epochs", "2", "-b", "16", "--labelsmooth", "--mixup", "0.2")
    run(train_args(tmp_path, *args, "--save", "full"))  # the reference, in this (one-thread) process
    # --print_freq 1 logs every batch: SIGTERM once the second batch is done
    proc = subprocess.Popen(train_cmd(tmp_path, *args, "--save", "stopped", "--print_freq", "1"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ONE_THREAD_ENV)
    log = tmp_path / "stopped" / "log.txt"
    wait_for(proc, lambda: log.exists() and "epoch 1 batch 2/" in log.read_text(), "the second batch")
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "stopped by a signal" in out
    state = model_ckpt.load(tmp_path / "stopped" / "checkpoint.pth")
    assert state["epoch"] == 0 and state["step"] > 0, "the checkpoint should be mid-epoch 1"
    # resumed, then SIGKILL once epoch 1 has ended: the next resume starts from the last checkpoint
    proc = subprocess.Popen(ONEBIT + ["train", "--resume", str(tmp_path / "stopped")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ONE_THREAD_ENV)
    metrics = tmp_path / "stopped" / "metrics.jsonl"
    wait_for(proc, lambda: metrics.exists() and metrics.read_text().strip(), "the end of epoch 1")
    proc.kill()
    proc.wait()
    assert len(metrics.read_text().splitlines()) < 2, "killed too late to test anything"
    subprocess.run(ONEBIT + ["train", "--resume", str(tmp_path / "stopped")], check=True, capture_output=True, env=ONE_THREAD_ENV)
    assert_same_weights(tmp_path / "full" / "checkpoint.pth", tmp_path / "stopped" / "checkpoint.pth")


def test_crash_while_writing_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pth"
    ckpt_io.save_atomic({"model": {"w": torch.ones(3)}, "epoch": 1}, path)

    def crash(obj, f, *a, **k):
        f.write(b"PK\x03\x04 partial")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="simulated"):
        ckpt_io.save_atomic({"model": {"w": torch.zeros(3)}, "epoch": 2}, path)
    monkeypatch.undo()
    state = model_ckpt.load(path)
    assert state["epoch"] == 1 and torch.equal(state["model"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pth"], "temporary file left behind"


def test_bad_checkpoints_are_clear_errors(tmp_path, capsys):
    run([*FAST, "--epochs", "1", "--results_dir", str(tmp_path), "--save", "r"])
    good = tmp_path / "r" / "checkpoint.pth"
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(ckpt_io.CheckpointError, match="truncated or corrupt"):
        model_ckpt.load(truncated)
    from onebit.models import create_model

    other = create_model("resnet20_1w1a", 10)
    with pytest.raises(ckpt_io.CheckpointError, match="checkpoint of model 'cnn_small_1w1a', not 'resnet20_1w1a'"):
        model_ckpt.load_model_state(other, model_ckpt.load(good), "resnet20_1w1a")
    with pytest.raises(ckpt_io.CheckpointError, match="missing: .*unexpected"):
        model_ckpt.load_model_state(other, model_ckpt.load(good))
    with pytest.raises(ckpt_io.CheckpointError, match="no run of resnet20_1w1a on cifar10"):
        resolve(["--resume", "--results_dir", str(tmp_path)])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:  # what `python -m onebit train -e FILE` runs
        cli.main(["train", "-e", str(truncated)])
    assert exit_.value.code == 2 and "truncated or corrupt" in capsys.readouterr().err


def test_gpus_flag_without_cuda_warns_and_runs_on_cpu(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("machine has CUDA")
    run([*FAST, "--epochs", "1", "--results_dir", str(tmp_path), "--save", "g", "--gpus", "0"])
    assert "CUDA is not available: running on the CPU" in (tmp_path / "g" / "log.txt").read_text()


# ---------------------------------------------------------------- flags that shape the network and optimizer

def _built(argv):
    from onebit.data import build_data
    from onebit.models.config import build_model

    config = resolve(argv)
    return config, build_model(config, *build_data("digits", batch_size=8).info.shape)


def test_method_flags_reach_the_quantizers():
    from onebit.quant.rbnn import RbnnInput, RbnnWeight

    config, model = _built(["--model", "resnet20_1w1a", "--method", "rbnn", "--rotation_update", "3", "--a32"])
    weights = [m for m in model.modules() if isinstance(m, RbnnWeight)]
    inputs = [m for m in model.modules() if isinstance(m, RbnnInput)]
    assert weights and all(w.rotation_update == 3 for w in weights)
    assert inputs and all(i.a32 for i in inputs)  # RBNN keeps its input standardisation in W1A32
    assert (config["Tmin"], config["Tmax"]) == (1e-2, 1e1)


def test_generic_a32_w32_and_method_defaults():
    from onebit.layers import BinaryConv2d

    config, model = _built(["--model", "resnet20_1w1a", "--method", "irnet", "--w32"])
    convs = [m for m in model.modules() if isinstance(m, BinaryConv2d)]
    assert convs and all(c.weight_quantizer is None and c.input_quantizer is not None for c in convs)
    assert (config["Tmin"], config["Tmax"]) == (0.1, 10.0)  # IR-Net's reference range when not given
    config, model = _built(["--model", "resnet20_1w1a", "--method", "irnet", "--a32", "--Tmin", "1e-3"])
    assert all(c.input_quantizer is None for c in model.modules() if isinstance(c, BinaryConv2d))
    assert config["Tmin"] == 1e-3
    with pytest.raises(ValueError, match="has no option 'gradiant'"):
        _built(["--method", "bireal", "--method_options", "gradiant=caffe"])


def test_weight_decay_scopes():
    from onebit.train.optim import parameter_groups

    _, model = _built(["--model", "resnet20_1w1a", "--method", "bnn"])
    conv = parameter_groups(model, 1e-5, "conv")
    assert conv[0]["weight_decay"] == 1e-5 and all(p.dim() == 4 for p in conv[0]["params"])
    assert conv[1]["weight_decay"] == 0 and all(p.dim() < 4 for p in conv[1]["params"])
    no_bn = parameter_groups(model, 1e-4, "no_bn")
    bn = {id(p) for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for p in m.parameters()}
    assert {id(p) for p in no_bn[1]["params"]} == bn
    assert len(parameter_groups(model, 1e-4, "all")) == 1
