"""``onebit import`` and ``-e`` on checkpoints in the official codes' layouts (fixtures built here)."""
from __future__ import annotations

import math
import re
import subprocess
import sys

import pytest
import torch

from onebit.cli import main as onebit_main
from onebit.models import create_model
from onebit.models import checkpoint as model_ckpt
from onebit.train import checkpoint as ckpt_io
from onebit.train.importer import import_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")
ONEBIT = [sys.executable, "-m", "onebit"]


def randomised(name: str, method: str, num_classes: int = 10, **options):
    """An onebit model with non-trivial BN statistics, RBNN angles and ReActNet shifts."""
    torch.manual_seed(0)
    model = create_model(name, num_classes, method=method, **options)
    with torch.no_grad():
        for key, t in model.state_dict().items():
            if t.is_floating_point() and not key.endswith(("R1", "R2", "weight", "threshold")):
                t.uniform_(0.5, 1.5) if key.endswith(("running_var", "theta", "beta")) else t.uniform_(-0.3, 0.3)
    return model.eval()


def rbnn_layout(model) -> dict:
    """RBNN models_cifar/resnet.py key names: layer<s>.<b>, conv<i>.{alpha (C,1,1), rotate, R1, R2}, linear."""
    state = {}
    for key, t in model.state_dict().items():
        m = re.match(r"layers\.(\d+)\.(.*)", key)
        if m:
            key = f"layer{int(m.group(1)) // 3 + 1}.{int(m.group(1)) % 3}.{m.group(2)}"
        key = key.replace("weight_quantizer.theta", "rotate").replace("weight_quantizer.", "").replace("fc.", "linear.")
        state[key] = t.view(-1, 1, 1) if key.endswith(".alpha") else t
    return state


def irnet_layout(model) -> dict:
    """IR-Net CIFAR resnet.py under DataParallel: module.layer<s>.<b>.conv<i>/bn<i>, module.bn2, module.linear."""
    state = {}
    for key, t in model.state_dict().items():
        key = re.sub(r"\.unit(\d)\.conv\.", r".conv\1.", key)
        key = re.sub(r"\.unit(\d)\.post\.", r".bn\1.", key)
        key = key.replace("head_bn.", "bn2.").replace("fc.", "linear.")
        state["module." + key] = t
    return state


def reactnet_layout(model, step: int) -> dict:
    """ReActNet mobilenet/reactnet.py under DataParallel: feature.<i>, move<ij> (1,C,1,1), prelu<i>;
    step 2 stores binary-conv weights flat as (n, 1) ``weights``."""
    state = {}
    for key, t in model.state_dict().items():
        m = re.match(r"(conv1|bn1)\.(.*)", key)
        if m:
            state[f"module.feature.0.{key}"] = t
            continue
        m = re.match(r"features\.(\d+)\.(.*)", key)
        if key.endswith("input_quantizer.threshold"):  # onebit's RSign threshold: the official shift is move11/21
            continue
        if not m:
            state["module." + key] = t
            continue
        block, rest = f"module.feature.{int(m.group(1)) + 1}", m.group(2)
        wide = any(k.startswith(f"features.{m.group(1)}.pointwise.1") for k in model.state_dict())
        bias = lambda v: v.view(1, -1, 1, 1)  # noqa: E731
        names = {"shift1.bias": ("move11.bias", bias(t)), "act1.gamma": ("move12.bias", bias(-t)),
                 "act1.beta": ("prelu1.weight", t), "act1.zeta": ("move13.bias", bias(t)),
                 "shift2.bias": ("move21.bias", bias(t)), "act2.gamma": ("move22.bias", bias(-t)),
                 "act2.beta": ("prelu2.weight", t), "act2.zeta": ("move23.bias", bias(t))}
        if rest in names:
            name, value = names[rest]
        elif rest == "conv3x3.weight":
            name, value = "binary_3x3", t
        elif rest.startswith("pointwise."):
            i = int(rest.split(".")[1])
            name, value = f"binary_pw_down{i + 1}" if wide else "binary_pw", t
        elif rest.startswith("bn1."):
            name, value = rest, t
        else:  # bn2.<k>.x
            k, field = rest.split(".", 2)[1:]
            name, value = (f"bn2_{int(k) + 1}." if wide else "bn2.") + field, t
        if rest == "conv3x3.weight" or rest.startswith("pointwise."):
            name, value = (name + ".weights", t.reshape(-1, 1)) if step == 2 else (name + ".weight", t)
        state[f"{block}.{name}"] = value
    return state


def same_logits(model, checkpoint: dict, method: str, size: int = 32) -> None:
    config = checkpoint["config"]
    rebuilt = create_model(checkpoint["model_name"], model.fc.out_features, method=method,
                           binary_type=(True, not config.get("w32", False)), **config.get("model_kwargs", {}))
    rebuilt.load_state_dict(checkpoint["model"])
    x = torch.randn(4, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(x), model(x), rtol=0, atol=1e-5)


def test_rbnn_checkpoint_converts_to_the_same_network(tmp_path):
    model = randomised("resnet20_1w1a", "rbnn")
    src = tmp_path / "model_best.pth.tar"
    torch.save({"epoch": 7, "model": "resnet20_1w1a", "state_dict": rbnn_layout(model), "best_prec1": 81.5,
                "parameters": list(model.parameters())}, src)
    out = tmp_path / "converted.pth"
    assert onebit_main(["import", str(src), "-o", str(out)]) == 0
    converted = model_ckpt.load(out)
    assert converted["config"] == {"model": "resnet20_1w1a", "method": "rbnn", "dataset": "cifar10"}
    assert converted["imported_from"] == {"format": "rbnn", "file": str(src), "epoch": 7, "best_prec1": 81.5}
    # RBNN's CIFAR pipeline normalises with ImageNet statistics
    assert converted["preprocessing"]["mean"] == (0.485, 0.456, 0.406)
    assert math.isclose(converted["model"]["layers.4.conv1.weight_quantizer.theta"].flatten()[0].item(),
                        model.state_dict()["layers.4.conv1.weight_quantizer.theta"].flatten()[0].item())
    same_logits(model, converted, "rbnn")


def test_irnet_checkpoint_detected_and_converted_in_memory(tmp_path):
    model = randomised("resnet20_bireal_1w1a", "irnet")
    src = tmp_path / "checkpoint.th"
    torch.save({"epoch": 11, "state_dict": irnet_layout(model), "best_prec1": 60.0}, src)
    checkpoint = model_ckpt.load(src)  # what -e / --stage1 read: converted in memory
    assert checkpoint["model_name"] == "resnet20_bireal_1w1a" and checkpoint["config"]["method"] == "irnet"
    same_logits(model, checkpoint, "irnet")


@pytest.mark.parametrize("step", [1, 2])
def test_reactnet_checkpoint_converts(tmp_path, step):
    model = randomised("reactnet_a", "reactnet", num_classes=1000, binary_type=(True, step == 2))
    src = tmp_path / "checkpoint.pth.tar"
    torch.save({"epoch": 3, "state_dict": reactnet_layout(model, step), "best_top1_acc": 12.0}, src)
    checkpoint = import_checkpoint(src)
    assert checkpoint["config"] == {"model": "reactnet_a", "method": "reactnet", "dataset": "imagenet",
                                    **({"w32": True} if step == 1 else {})}
    same_logits(model, checkpoint, "reactnet", size=64)


def test_evaluate_takes_the_data_set_of_the_file(tmp_path):
    """``-e`` on an ImageNet-style file evaluates on imagenet, unless ``--dataset`` says otherwise."""
    from onebit.train.config import resolve

    model = randomised("reactnet_a", "reactnet", num_classes=1000, binary_type=(True, True))
    src = tmp_path / "checkpoint.pth.tar"
    torch.save({"epoch": 3, "state_dict": reactnet_layout(model, 2), "best_top1_acc": 12.0}, src)
    assert resolve(["-e", str(src)])["dataset"] == "imagenet"
    assert resolve(["-e", str(src), "--dataset", "cifar10"])["dataset"] == "cifar10"


def test_evaluate_an_official_file_directly(tmp_path):
    import numpy as np

    from onebit.data.formats import Split, write_cifar10

    rng = np.random.default_rng(0)
    split = lambda n: Split(rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, n))  # noqa: E731
    write_cifar10(tmp_path / "data" / "cifar-10-batches-py", split(8), split(20))
    model = randomised("resnet20_bireal_1w1a", "irnet")
    src = tmp_path / "checkpoint.th"
    torch.save({"epoch": 11, "state_dict": irnet_layout(model), "best_prec1": 60.0}, src)
    result = subprocess.run(ONEBIT + ["train", "-e", str(src), "--data_path", str(tmp_path / "data"), "--gpus", "cpu"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "resnet20_bireal_1w1a on cifar10 test: top-1" in result.stdout


def test_bad_input_is_a_one_line_error(tmp_path, capsys):
    model = randomised("resnet20_bireal_1w1a", "irnet")
    src = tmp_path / "checkpoint.th"
    torch.save({"epoch": 1, "state_dict": irnet_layout(model), "best_prec1": 1.0}, src)
    out = str(tmp_path / "o.pth")

    def error(*argv) -> str:
        assert onebit_main(["import", *argv, "-o", out]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err
        return err

    # another architecture: the IR-Net ResNet-20 onto RBNN's ResNet-20 (one shortcut per block)
    assert re.search(r"does not fit onebit model 'resnet20_1w1a' \(irnet layout\): not mapped: .*layer1\.0",
                     error(str(src), "--model", "resnet20_1w1a"))
    truncated = tmp_path / "truncated.th"
    truncated.write_bytes(src.read_bytes()[:2000])
    assert "truncated or corrupt" in error(str(truncated))
    torch.save({"state_dict": {"encoder.weight": torch.zeros(3)}}, tmp_path / "other.pth")
    assert "is not a checkpoint of rbnn, irnet, reactnet, mmcls" in error(str(tmp_path / "other.pth"))
    torch.save({"epoch": 1, "model": "resnet56_1w1a", "state_dict": {"features.0.rotate": torch.zeros(1)}},
               tmp_path / "r56.pth")
    assert "rbnn architecture 'resnet56_1w1a' has no onebit counterpart" in error(str(tmp_path / "r56.pth"))
    state = irnet_layout(model)
    state.pop("module.layer2.1.conv1.weight")
    torch.save({"epoch": 1, "state_dict": state, "best_prec1": 1.0}, tmp_path / "partial.th")
    assert "missing for resnet20_bireal_1w1a: layer2.1.unit1.conv.weight" in error(str(tmp_path / "partial.th"))


def test_evaluation_refuses_other_preprocessing():
    from onebit.train.importer import check_preprocessing

    checkpoint = {"path": "x.pth", "preprocessing": {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}}
    check_preprocessing(checkpoint, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    with pytest.raises(ckpt_io.CheckpointError, match="normalised with mean .* would not be the official one"):
        check_preprocessing(checkpoint, (0.507, 0.487, 0.441), (0.267, 0.256, 0.276))


def mmcls_layout(model) -> dict:
    """Seed 002 mmcls: backbone.layer<s>.<b>.{conv,bn,move,prelu}<i>, RPRelu as prelu<i>.{bias1,prelu,bias2},
    neck.bn (GlobalAveragePoolingBN), head.fc; LearnableBias shaped (1, C, 1, 1)."""
    state = {"meta": {"epoch": 100}, "state_dict": {}}
    for key, t in model.state_dict().items():
        if key.endswith("input_quantizer.threshold"):
            continue
        value = t
        for pattern, repl in ((r"\.unit(\d)\.conv\.", r".conv\1."), (r"\.unit(\d)\.post\.", r".bn\1."),
                              (r"\.unit(\d)\.pre\.bias", r".move\1.bias"), (r"\.unit(\d)\.act\.beta", r".prelu\1.prelu.weight"),
                              (r"\.unit(\d)\.act\.gamma", r".prelu\1.bias1.bias"), (r"\.unit(\d)\.act\.zeta", r".prelu\1.bias2.bias"),
                              (r"\.shortcut\.", ".downsample.")):
            key = re.sub(pattern, repl, key)
        if key.endswith(("move1.bias", "move2.bias", "bias1.bias", "bias2.bias")):
            value = (-t if key.endswith("bias1.bias") else t).view(1, -1, 1, 1)
        if key.startswith("head_bn."):
            key = "neck.bn." + key[len("head_bn."):]
        elif key.startswith("fc."):
            key = "head." + key
        else:
            key = "backbone." + key
        state["state_dict"][key] = value
    return state


@pytest.mark.parametrize("name,method", [("irnet_r18", "irnet"), ("reactnet_r18", "reactnet")])
def test_mmcls_checkpoint_converts(tmp_path, name, method):
    model = randomised(name, method, num_classes=1000)
    src = tmp_path / "epoch_100.pth"
    torch.save(mmcls_layout(model), src)
    checkpoint = import_checkpoint(src)
    assert checkpoint["config"] == {"model": name, "method": method, "dataset": "imagenet"}
    same_logits(model, checkpoint, method, size=64)


def official_rbnn(t: torch.Tensor, key: str) -> tuple[str, torch.Tensor]:
    """An onebit RBNN weight-quantizer tensor under RBNN's name (``rotate``; ``alpha`` shaped (C, 1, 1))."""
    key = key.replace("weight_quantizer.theta", "rotate").replace("weight_quantizer.", "")
    return key, t.view(-1, 1, 1) if key.endswith(".alpha") else t


def test_rbnn_vgg_small_converts(tmp_path):
    """RBNN models_cifar/vgg.py VGG_SMALL_1W1A: conv0/bn0, conv1..5 (binary), bn1..5, fc."""
    model = randomised("vgg_small_1w1a", "rbnn")
    convs, bns = {1: 1, 5: 2, 8: 3, 12: 4, 15: 5}, {3: 1, 6: 2, 10: 3, 13: 4, 17: 5}
    state = {}
    for key, t in model.state_dict().items():
        m = re.match(r"features\.(\d+)\.(.*)", key)
        if m:
            i = int(m.group(1))
            key = f"conv{convs[i]}.{m.group(2)}" if i in convs else f"bn{bns[i]}.{m.group(2)}"
        key, t = official_rbnn(t, key)
        state[key] = t
    src = tmp_path / "model_best.pth.tar"
    torch.save({"epoch": 2, "model": "vgg_small_1w1a", "state_dict": state, "best_prec1": 30.0}, src)
    checkpoint = import_checkpoint(src)
    assert checkpoint["config"] == {"model": "vgg_small_1w1a", "method": "rbnn", "dataset": "cifar10"}
    same_logits(model, checkpoint, "rbnn")


def test_rbnn_imagenet_resnet_converts(tmp_path):
    """RBNN models_imagenet/resnet.py ResNet-18: the IR-Net layout with RBNN's quantizer names, plus a
    BatchNorm1d ``bn3`` its forward never uses (dropped)."""
    model = randomised("irnet_r18", "rbnn")
    state = {}
    for key, t in irnet_layout(model).items():
        key, t = official_rbnn(t, key.removeprefix("module.").replace("linear.", "fc."))
        state[key] = t
    state.update({f"bn3.{k}": v for k, v in torch.nn.BatchNorm1d(10).state_dict().items()})
    src = tmp_path / "model_best.pth.tar"
    torch.save({"epoch": 2, "model": "resnet18_1w1a", "state_dict": state, "best_prec1": 5.0}, src)
    checkpoint = import_checkpoint(src)
    assert checkpoint["config"] == {"model": "irnet_r18", "method": "rbnn", "dataset": "cifar10"}
    same_logits(model, checkpoint, "rbnn")


def test_reactnet_resnet18_converts(tmp_path):
    """ReActNet resnet/2_step2/birealnet.py: four one-conv blocks per stage (move0, binary_conv, bn1, move1,
    prelu, move2), downsample AvgPool -> conv1x1 -> BN in block 0 of stages 2-4, under DataParallel."""
    model = randomised("reactnet_r18", "reactnet")
    with torch.no_grad():
        model.layer1[0].unit1.conv.weight[0, 0, 0, 0] = 0.0  # torch.sign keeps it 0 in the official forward
    names = {"pre.bias": "move0.bias", "act.gamma": "move1.bias", "act.beta": "prelu.weight", "act.zeta": "move2.bias"}
    state = {}
    for key, t in model.state_dict().items():
        if key.endswith("input_quantizer.threshold"):
            continue
        m = re.match(r"layer(\d)\.(\d)\.(unit(\d)\.|shortcut\.)(.*)", key)
        if m and m.group(4):
            block, rest = f"layer{m.group(1)}.{2 * int(m.group(2)) + int(m.group(4)) - 1}", m.group(5)
            rest = re.sub(r"^conv\.", "binary_conv.", re.sub(r"^post\.", "bn1.", rest))
            if rest in names:
                rest, t = names[rest], (-t if rest == "act.gamma" else t)
                t = t.view(1, -1, 1, 1) if rest.startswith("move") else t
            key = f"{block}.{rest}"
        elif m:
            key = f"layer{m.group(1)}.{2 * int(m.group(2))}.downsample.{m.group(5)}"
        state["module." + key] = t
    src = tmp_path / "checkpoint.pth.tar"
    torch.save({"epoch": 0, "state_dict": state, "best_top1_acc": 1.0, "optimizer": {}}, src)
    checkpoint = import_checkpoint(src)
    assert checkpoint["config"] == {"model": "reactnet_r18", "method": "reactnet", "dataset": "imagenet"}
    assert checkpoint["imported_from"]["zero_binary_weights"] == 1
    same_logits(model, checkpoint, "reactnet", size=64)


MMCLS_META = """dataset_type = 'ImageNet'
img_norm_cfg = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)
model = dict(type='ImageClassifier', backbone=dict(type={type!r}, arch={arch!r}, binary_type={binary_type!r}, {extra}
             style='pytorch'), neck=dict(type='GlobalAveragePooling'), head=dict(type='LinearClsHead', num_classes=10))
gpu_ids = range(0, 1)
"""


def test_mmcls_strong_baseline_converts_with_its_config(tmp_path):
    """mmcls ResArch StrongBaseline (bn<i> before the conv, XNOR++ scale<i>.{alpha,beta,gamma}, PReLU
    nonlinear<i>, strided-conv downsample); the step-1 binary_type comes from the file's meta['config']."""
    model = randomised("strong_baseline", "bnn", binary_type=(True, False), downsample="conv")
    state = {}
    for key, t in model.state_dict().items():
        for pattern, repl in ((r"\.unit(\d)\.pre\.", r".bn\1."), (r"\.unit(\d)\.conv\.", r".conv\1."),
                              (r"\.unit(\d)\.act\.", r".nonlinear\1."), (r"\.shortcut\.", ".downsample.")):
            key = re.sub(pattern, repl, key)
        m = re.match(r"(.*)\.unit(\d)\.post\.(channel|row|column)$", key)
        if m:
            shape = {"channel": (1, -1, 1, 1), "row": (1, 1, -1, 1), "column": (1, 1, 1, -1)}[m.group(3)]
            key = f"{m.group(1)}.scale{m.group(2)}.{dict(channel='alpha', row='beta', column='gamma')[m.group(3)]}"
            t = t.reshape(shape)
        state["head." + key if key.startswith("fc.") else "backbone." + key] = t
    meta = MMCLS_META.format(type="ResArch", arch="StrongBaseline", binary_type=(True, False),
                             extra="stem_act='prelu', num_stages=4, out_indices=(3, ),")
    src = tmp_path / "epoch_75.pth"
    torch.save({"meta": {"config": meta, "epoch": 75}, "state_dict": state}, src)
    checkpoint = import_checkpoint(src)
    assert checkpoint["config"] == {"model": "strong_baseline", "method": "bnn", "dataset": "imagenet", "w32": True,
                                    "model_kwargs": {"downsample": "conv", "stem_act": "prelu", "head_bn": False}}
    assert checkpoint["preprocessing"]["mean"] == pytest.approx((0.485, 0.456, 0.406))
    same_logits(model, checkpoint, "bnn", size=224)  # the scales are sized for 56x56 .. 7x7


def test_mmcls_reactnet_a_converts(tmp_path):
    """mmcls MobileArch ReActNet-A: backbone.conv1.{conv,bn}, layer<s>.<b> blocks (move1, binary_3x3, bn1,
    prelu1.{bias1,prelu,bias2}, move2, binary_pw + bn2 or binary_pw_down<k> + bn2_<k>, prelu2), head.fc."""
    model = randomised("reactnet_a", "reactnet")
    stages = [1, 2, 2, 6, 2]  # blocks per mmcls layer
    where = [(s + 1, b) for s, n in enumerate(stages) for b in range(n)]
    state = {}
    for key, t in reactnet_layout(model, 1).items():
        key = key.removeprefix("module.")
        m = re.match(r"feature\.(\d+)\.(.*)", key)
        if key.startswith("fc."):
            state["head." + key] = t
            continue
        if m.group(1) == "0":
            state["backbone." + m.group(2).replace("conv1.", "conv1.conv.").replace("bn1.", "conv1.bn.")] = t
            continue
        s, b = where[int(m.group(1)) - 1]
        rest = m.group(2)
        for old, new in (("move11.", "move1."), ("move21.", "move2."), ("move12.", "prelu1.bias1."),
                         ("move13.", "prelu1.bias2."), ("prelu1.weight", "prelu1.prelu.weight"),
                         ("move22.", "prelu2.bias1."), ("move23.", "prelu2.bias2."),
                         ("prelu2.weight", "prelu2.prelu.weight")):
            rest = rest.replace(old, new) if rest.startswith(old) else rest
        state[f"backbone.layer{s}.{b}.{rest}"] = t
    meta = MMCLS_META.format(type="MobileArch", arch="ReActNet-A", binary_type=(True, True), extra="")
    src = tmp_path / "epoch_256.pth"
    torch.save({"meta": {"config": meta}, "state_dict": state}, src)
    checkpoint = import_checkpoint(src)
    assert checkpoint["config"] == {"model": "reactnet_a", "method": "reactnet", "dataset": "imagenet"}
    same_logits(model, checkpoint, "reactnet", size=64)
