"""``onebit train --bn_retrain``: weights fixed to their binarized values, only BatchNorm trains."""
from __future__ import annotations


import pytest
import torch
from torch import nn

from onebit import cli
from onebit.models import create_model
from onebit.quant import FrozenBinaryWeight
from onebit.models import checkpoint as model_ckpt
from onebit.models.trained import load_trained_model
from onebit.train import run
from onebit.models.frozen import freeze_binary_weights, frozen_for_bn_retrain, train_only_batchnorm

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = ["--dataset", "digits", "--model", "cnn_small_1w1a", "-b", "64", "--print_freq", "0", "--seed", "5"]


def _randomised(model: nn.Module) -> nn.Module:
    """Non-trivial BN state, so that the comparison below sees the whole network."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.3)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(m.num_features, generator=g))
    return model.eval()


@pytest.mark.parametrize("method", ["bireal", "irnet", "rbnn", "xnor", "bnn", "reactnet"])
def test_freezing_keeps_the_function_and_folds_the_scale(method):
    model = _randomised(create_model("resnet20_1w1a", 10, method=method))
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = model(x)
        expected = {n: m.quantized_weight().clone() for n, m in model.named_modules()
                    if getattr(m, "weight_quantizer", None) is not None}
    changed = freeze_binary_weights(model)
    assert sorted(changed) == sorted(expected) and len(changed) == 18
    with torch.no_grad():
        assert torch.equal(model(x), before)
    for name, layer in model.named_modules():
        if name in expected:
            assert isinstance(layer.weight_quantizer, FrozenBinaryWeight)
            w = layer.quantized_weight().detach().flatten(1)
            assert torch.equal(layer.quantized_weight(), expected[name])  # the binarized value, scale included
            assert torch.equal(w.abs(), w.abs().amax(1, keepdim=True).expand_as(w))  # +-alpha per channel
    assert freeze_binary_weights(model) == []  # already frozen: nothing to do


def test_only_batchnorm_parameters_train():
    model = create_model("resnet20_1w1a", 10, method="bireal")
    n = train_only_batchnorm(model)
    norms = [m for m in model.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
    bn = {id(p) for m in norms for p in m.parameters()}
    assert n == sum(p.numel() for m in norms for p in m.parameters()) and any(isinstance(m, nn.BatchNorm1d) for m in norms)
    assert all(p.requires_grad == (id(p) in bn) for p in model.parameters())
    with pytest.raises(ValueError, match="no BatchNorm"):
        train_only_batchnorm(nn.Sequential(nn.Linear(2, 2)))


def test_bn_retrain_run_trains_bn_only_and_exports(capsys, tmp_path):
    base = run([*FAST, "--epochs", "2", "--results_dir", str(tmp_path), "--save", "base", "--method", "bireal",
                "--optimizer", "adam", "--lr", "0.01"])
    ckpt = tmp_path / "base" / "checkpoint.pth"
    final = base["final_top1"]
    result = run(["--bn_retrain", str(ckpt), "-b", "64", "--print_freq", "0", "--lr", "0.01",
                  "--results_dir", str(tmp_path), "--save", "bn"])
    assert result["top1_before"] == pytest.approx(final)  # the frozen network is the checkpoint's
    state = model_ckpt.load(tmp_path / "bn" / "checkpoint.pth")
    assert state["epoch"] == 1 and state["config"]["frozen_weights"] and state["config"]["method"] == "bireal"
    assert state["config"]["dataset"] == "digits"  # taken from the checkpoint
    # binary weights: the binarized trained ones, unchanged by the BN epoch; BN state moved
    original = load_trained_model(ckpt).model
    frozen = dict(state["model"])
    for name, m in original.named_modules():
        if getattr(m, "weight_quantizer", None) is not None:
            assert torch.equal(frozen[f"{name}.weight"], m.quantized_weight().detach())
        if isinstance(m, nn.BatchNorm2d):
            assert not torch.equal(frozen[f"{name}.running_mean"], m.running_mean)
            assert not torch.equal(frozen[f"{name}.weight"], m.weight.detach())
        if isinstance(m, nn.Linear):
            assert torch.equal(frozen[f"{name}.weight"], m.weight.detach())
    # the checkpoint rebuilds (-e, onebit export) like any other
    evaluated = run(["--dataset", "digits", "-e", str(tmp_path / "bn" / "checkpoint.pth")])
    assert evaluated["test_top1"] == pytest.approx(result["final_top1"])
    rebuilt = load_trained_model(tmp_path / "bn" / "checkpoint.pth").model
    assert all(isinstance(m.weight_quantizer, FrozenBinaryWeight) for m in rebuilt.modules()
               if getattr(m, "weight_quantizer", None) is not None)
    capsys.readouterr()
    assert cli.main(["export", str(tmp_path / "bn" / "checkpoint.pth"), "-o", str(tmp_path / "bn.onebit")]) == 0
    out = capsys.readouterr().out
    assert "2 binary layers" in out and "top-1 agrees" in out


def test_bn_retrain_misuse(tmp_path):
    from onebit.train.config import resolve

    run([*FAST, "--epochs", "1", "--results_dir", str(tmp_path), "--save", "b"])
    with pytest.raises(ValueError, match="--bn_retrain and --stage1"):
        resolve(["--bn_retrain", str(tmp_path / "b" / "checkpoint.pth"), "--stage1", "x.pth"])
    c = resolve(["--bn_retrain", str(tmp_path / "b" / "checkpoint.pth"), "--epochs", "3", "--Tmax", "2"])
    assert c["epochs"] == 3 and c["Tmax"] == 2 and c["model"] == "cnn_small_1w1a"
    with pytest.raises(model_ckpt.CheckpointError, match="not found"):
        resolve(["--bn_retrain", str(tmp_path / "missing.pth")])


def test_frozen_network_is_rebuilt_with_the_same_state_keys():
    model = create_model("cnn_small_1w1a", 10, in_channels=1, image_size=8, method="rbnn")
    frozen = create_model("cnn_small_1w1a", 10, in_channels=1, image_size=8, method="rbnn")
    frozen_for_bn_retrain(frozen)
    # the rotation state of RBNN's weight quantizer is gone with the quantizer; alpha stays as the output gain
    state = model.state_dict()
    gains = {k.replace(".alpha", ".gain") for k in state if k.endswith(".weight_quantizer.alpha")}
    assert gains and set(frozen.state_dict()) == {k for k in state if ".weight_quantizer." not in k} | gains
