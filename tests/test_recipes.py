"""The recipes of configs/: each resolves, states its source's numbers, builds its network with
its method and options, and trains a step and evaluates on fixture data; ``onebit recipes``."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from onebit.cli import main as onebit_main
from onebit.data.build import Data, DataInfo
from onebit.data.formats import Split, write_cifar10, write_mnist
from onebit.data.memory import InMemoryLoader
from onebit.layers.binary import BinaryConv2d
from onebit.models import get_entry
from onebit.models.config import build_model
from onebit.quant.methods import get_method
from onebit.train import engine
from onebit.train.config import resolve
from onebit.train.optim import build_optimizer, set_lr
from onebit.train.recipes import list_recipes, load_recipe_file
from onebit.train.stages import QUANTIZER_MODULES

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
RECIPES, ERRORS = list_recipes(CONFIGS)
BY_NAME = {r.name: r for r in RECIPES}


def test_every_recipe_resolves():
    assert not ERRORS
    assert len(RECIPES) >= 40
    for r in RECIPES:
        assert r.config.get("description"), f"{r.name} has no description"
        assert r.name == "digits/cnn_small_bnn" or r.config.get("paper"), f"{r.name} does not name its source"


def stage1_partner(recipe):
    """The recipe whose run writes the checkpoint that ``recipe``'s ``stage1`` names."""
    target = Path(recipe.config["stage1"])
    return next(r for r in RECIPES if Path(r.config["results_dir"]) / r.config["save"] / "checkpoint.pth" == target)


TWO_STAGE = [r.name for r in RECIPES if r.config["stage1"]]


def test_every_second_stage_names_its_first_stage():
    assert len(TWO_STAGE) == 7
    for name in TWO_STAGE:
        second, first = BY_NAME[name], stage1_partner(BY_NAME[name])
        assert first.config["w32"] and not second.config["w32"]
        for key in ("model", "method", "model_kwargs", "dataset"):
            assert first.config[key] == second.config[key], (name, key)


def test_lr_gamma_scales_each_step_milestone():
    # The Training-Tricks stage 2 schedule: 2e-4, x0.2 at epochs 150, 250 and 320.
    config = resolve(["--optimizer", "adam", "--lr", "2e-4", "--lr_type", "step", "--lr_decay_step", "150", "250",
                      "320", "--lr_gamma", "0.2", "--epochs", "350"])
    optimizer = torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    lrs = {e: set_lr(optimizer, e, config) for e in (0, 149, 150, 249, 250, 320, 349)}
    expected = {0: 2e-4, 149: 2e-4, 150: 4e-5, 249: 4e-5, 250: 8e-6, 320: 1.6e-6, 349: 1.6e-6}
    assert lrs == pytest.approx(expected, rel=1e-12)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1.6e-6)
    assert resolve([])["lr_gamma"] == 0.1  # MultiStepLR's default, as the seeds


# ---------------------------------------------------------------- `onebit recipes`

def test_recipes_command_table_and_json(capsys):
    assert onebit_main(["recipes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["recipe", "model", "method", "dataset"]
    row = next(line.split() for line in lines if line.startswith("rbnn/cifar10_resnet20_bireal_1w1a_1000ep "))
    assert row == ["rbnn/cifar10_resnet20_bireal_1w1a_1000ep", "resnet20_bireal_1w1a", "rbnn", "cifar10", "1000",
                   "87.8"]
    assert len(lines) == len(RECIPES) + 1

    assert onebit_main(["recipes", "reactnet_a", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in listed] == ["mmcls/reactnet_a_step1", "mmcls/reactnet_a_step2",
                                           "reactnet/reactnet_a_step1", "reactnet/reactnet_a_step2"]
    assert listed[3]["stage1"] == "results/reactnet_a_step1/checkpoint.pth" and listed[3]["method"] == "reactnet"


def test_bad_recipes_are_named(tmp_path, capsys):
    (tmp_path / "_base_").mkdir()
    (tmp_path / "_base_" / "common.yaml").write_text("dataset: digits\nmodel: cnn_small_1w1a\n")
    (tmp_path / "good.yaml").write_text("_base_: _base_/common.yaml\ndescription: fine\ntarget_top1: 90\n")
    (tmp_path / "typo.yaml").write_text("_base_: _base_/common.yaml\nlearning_rate: 0.1\n")
    (tmp_path / "target.yaml").write_text("_base_: _base_/common.yaml\ntarget_top1: '91%'\n")
    (tmp_path / "orphan.yaml").write_text("_base_: _base_/missing.yaml\n")
    recipes, errors = list_recipes(tmp_path)
    assert [r.name for r in recipes] == ["good"]  # files under _base_ are not recipes
    assert len(errors) == 3
    assert "typo.yaml: unknown key 'learning_rate'" in errors[2]
    assert "target.yaml: target_top1 must be a percentage" in errors[1]
    assert "orphan.yaml: config file not found" in errors[0] and "missing.yaml" in errors[0]
    assert onebit_main(["recipes", "--root", str(tmp_path)]) == 2
    assert "onebit recipes: error:" in capsys.readouterr().err
    assert onebit_main(["recipes", "--root", str(tmp_path / "nowhere")]) == 2
    assert "recipe folder not found" in capsys.readouterr().err
    (tmp_path / "bad.yaml").write_text("lr_type: cosine\n")
    with pytest.raises(ValueError, match="bad.yaml: bad value for 'lr_type'"):
        load_recipe_file(tmp_path / "bad.yaml")


# ---------------------------------------------------------------- a training step of every recipe

def random_split(rng, n: int, channels: int, side: int) -> Split:
    return Split(rng.integers(0, 256, (n, channels, side, side), dtype=np.uint8), rng.integers(0, 10, n))


def tiny_imagenet_data(size: int, *, device, seed, rank, world_size, **_) -> Data:
    """Two training and two test images of ImageNet's shape (1000 classes), in memory at ``size``
    instead of 224: the ImageNet recipes' networks are global-pooled, so any size >= 32 builds."""
    rng = np.random.default_rng(seed)

    def split(n):
        return Split(rng.integers(0, 256, (n, 3, size, size), dtype=np.uint8), rng.integers(0, 1000, n))

    info = DataInfo("imagenet", 1000, 3, size, 2, 2, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    common = dict(mean=info.mean, std=info.std, device=device, seed=seed, rank=rank, world_size=world_size)
    return Data(info, InMemoryLoader(split(2), batch_size=2, train=True, crop_padding=4, flip=True, **common),
                InMemoryLoader(split(2), batch_size=2, train=False, **common))


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    """On-disk CIFAR-10 and MNIST with 2 training / 2 test images, and a random-weight
    torchvision ResNet-34 (1000 classes) as every distillation recipe's teacher checkpoint."""
    import torchvision

    root = tmp_path_factory.mktemp("recipe_data")
    rng = np.random.default_rng(0)
    write_cifar10(root / "cifar-10-batches-py", random_split(rng, 2, 3, 32), random_split(rng, 2, 3, 32))
    write_mnist(root / "mnist", random_split(rng, 2, 1, 28), random_split(rng, 2, 1, 28))
    torch.manual_seed(0)
    teacher = root / "resnet34.pth"
    torch.save(torchvision.models.resnet34(num_classes=1000).state_dict(), teacher)
    return {"data": root, "teacher": teacher}


def fake_stage1_checkpoint(second, path: Path, info) -> dict[str, torch.Tensor]:
    """What the first-stage recipe's run would save: its network, weights moved off their init."""
    first = stage1_partner(second)
    model = build_model(first.config, *info.shape)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.125)
    state = model.state_dict()
    torch.save({"model": state, "model_name": first.config["model"]}, path)
    return state


def check_method(model, config) -> None:
    """Every binary conv carries the recipe's method with its options (real sides: no quantizer)."""
    method = get_method(config["method"] or get_entry(config["model"]).default_method)
    options = dict(config["method_options"] or {})
    options |= {k: config[k] for k in ("rotation_update",) if k in method.options()}
    convs = [m for m in model.modules() if isinstance(m, BinaryConv2d)]
    assert convs
    for conv in convs:
        assert (conv.weight_quantizer is None) == config["w32"]
        assert (conv.input_quantizer is None) == (config["a32"] and "a32" not in method.options())
        for quantizer, spec in ((conv.input_quantizer, method.input_quantizer),
                                (conv.weight_quantizer, method.weight_quantizer)):
            # every registered method names its quantizers by class, or by a partial of one
            assert quantizer is None or isinstance(quantizer, getattr(spec, "func", spec))
        for key, value in options.items():  # an option of a side kept real (w32: weight options) has no holder
            holders = [q for q in (conv.input_quantizer, conv.weight_quantizer) if hasattr(q, key)]
            assert all(getattr(q, key) == value for q in holders), key
            assert holders or config["w32"] or config["a32"], key


@torch.no_grad()
def top1_of(trainer) -> float:
    """Top-1 (%) of the trainer's network on its test split, counted here."""
    trainer.net.eval()
    hits = torch.cat([trainer.net(x).argmax(1) == y for x, y in trainer.data.test])
    return 100.0 * int(hits.sum()) / len(hits)


def network_and_training(recipe) -> str:
    """What a one-epoch run of the recipe exercises beyond its schedule's numbers."""
    c = recipe.config
    keys = ("model", "model_kwargs", "method_options", "a32", "w32", "dataset", "optimizer", "weight_decay_scope",
            "teacher", "distill", "labelsmooth")
    return json.dumps([recipe.method, bool(c["stage1"])] + [c[k] for k in keys], sort_keys=True)


# The first recipe of each group that trains the same network the same way runs a training epoch;
# the others (e.g. RBNN's ImageNet ResNet-18 at three batch sizes) build, check and evaluate.
TRAINS_A_STEP = {network_and_training(r): r.name for r in reversed(RECIPES)}.values()


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_recipe_trains_a_step_and_evaluates(name, fixtures, tmp_path, monkeypatch):
    recipe = BY_NAME[name]
    dataset = recipe.config["dataset"]
    image_size = 64 if recipe.config["model"] == "resnet18_1w1a" else 32  # 64: resnet18_1w1a's ImageNet form
    argv = ["--config", str(recipe.path), "--epochs", "1", "--results_dir", str(tmp_path), "--save", "run",
            "--print_freq", "0", "--time_estimate", "0", "-b", "512" if dataset == "digits" else "2", "-bt", "512",
            "--data_path", str(fixtures["data"])]
    if recipe.config["teacher"]:
        argv += ["--teacher_ckpt", str(fixtures["teacher"])]
    real_build_data = engine.build_data
    # Checkpoints as the engine hands them to the writer, and no model summary in the log: writing
    # checkpoints is test_train.py's subject, the summary test_summary.py's (both cost seconds here).
    written = {}
    monkeypatch.setattr(engine.ckpt_io, "save_atomic", lambda obj, path: written.__setitem__(Path(path).name, obj))
    monkeypatch.setattr(engine.Trainer, "_log_model_summary", lambda self, log: None)
    monkeypatch.setattr(engine, "build_data",
                        lambda name, *a, **k: tiny_imagenet_data(image_size, **k) if name == "imagenet"
                        else real_build_data(name, *a, **k))
    stage1_state = None
    if recipe.config["stage1"]:
        info = engine.build_data(dataset, fixtures["data"], device="cpu", seed=0, rank=0, world_size=1).info
        stage1_state = fake_stage1_checkpoint(recipe, tmp_path / "stage1.pth", info)
        argv += ["--stage1", str(tmp_path / "stage1.pth")]

    config = resolve(argv)
    trainer = engine.Trainer(config)
    check_method(trainer.net, config)
    if stage1_state is not None:  # every tensor of stage 1 is in stage 2; only quantizer state may differ
        own = trainer.net.state_dict()
        assert all(any(m in k.split(".") for m in QUANTIZER_MODULES) for k in own.keys() - set(trainer.stage1.loaded))
        assert trainer.stage1.loaded and all(torch.equal(own[k], stage1_state[k]) for k in trainer.stage1.loaded)
    assert (trainer.teacher is not None) == bool(recipe.config["teacher"])
    if name not in TRAINS_A_STEP:
        assert set_lr(build_optimizer(trainer.net, config), 0, config) > 0
        assert trainer.evaluate()["test_top1"] == top1_of(trainer)
        return
    before = {k: v.clone() for k, v in trainer.net.named_parameters()}
    result = trainer.fit()

    assert result["final_top1"] == top1_of(trainer)
    changed = [k for k, v in trainer.net.named_parameters() if not torch.equal(v, before[k])]
    assert changed, "the training step changed no parameter"
    saved = written["checkpoint.pth"]
    assert saved["epoch"] == 1 and saved["config"]["model"] == recipe.config["model"]
    assert saved["model"].keys() == trainer.net.state_dict().keys()
