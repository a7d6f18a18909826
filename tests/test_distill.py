"""Distillation losses against hand-computed values, the frozen teacher, feature hooks, and
the strict stage-1 -> stage-2 load (onebit/train/distill.py, onebit/train/stages.py)."""
from __future__ import annotations

import math

import pytest
import torch
import torchvision
from torch import nn

from onebit.models import create_model
from onebit.quant import Method, Quantizer, SteSign
from onebit.train.checkpoint import CheckpointError
from onebit.train.distill import (
    DistillationLoss, FeatureHooks, Teacher, attention_loss, attention_map, block_names, distributional_loss, kd_loss,
)
from onebit.train.stages import load_stage1


pytestmark = pytest.mark.usefixtures("one_thread")


def softmax(row, t=1.0):
    e = [math.exp(v / t) for v in row]
    return [v / sum(e) for v in e]


STUDENT = [[1.0, 2.0, 3.0], [0.5, -1.0, 0.0]]
TEACHER = [[3.0, 1.0, 0.0], [0.0, 0.0, 2.0]]
LABELS = [2, 0]


def hand_cross_entropy(p_target, logits, t=1.0):
    return -sum(pt * math.log(ps) for pt, ps in zip(p_target, softmax(logits, t)))


def hand_kl(teacher, student, t):
    p, q = softmax(teacher, t), softmax(student, t)
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


def tensors():
    s = torch.tensor(STUDENT, requires_grad=True)
    return s, torch.tensor(TEACHER), torch.tensor(LABELS)


def test_distributional_loss_is_soft_target_cross_entropy():
    s, t, _ = tensors()
    expected = sum(hand_cross_entropy(softmax(tr), sr) for sr, tr in zip(STUDENT, TEACHER)) / 2
    loss = distributional_loss(s, t)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    # d/dz_S of mean_n CE(p_T, softmax z_S) = (softmax(z_S) - p_T) / N: KL's gradient
    grad = [[(a - b) / 2 for a, b in zip(softmax(sr), softmax(tr))] for sr, tr in zip(STUDENT, TEACHER)]
    torch.testing.assert_close(s.grad, torch.tensor(grad))


def test_kd_loss_has_temperature_squared_scaling():
    s, t, _ = tensors()
    temp = 4.0
    expected = temp**2 * sum(hand_kl(tr, sr, temp) for sr, tr in zip(STUDENT, TEACHER)) / 2
    loss = kd_loss(s, t, temp)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    grad = [[temp * (a - b) / 2 for a, b in zip(softmax(sr, temp), softmax(tr, temp))]
            for sr, tr in zip(STUDENT, TEACHER)]
    torch.testing.assert_close(s.grad, torch.tensor(grad))


def test_ce_plus_kd_weighs_the_two_terms():
    s, t, y = tensors()
    alpha, temp = 0.75, 2.0
    ce = sum(-math.log(softmax(sr)[label]) for sr, label in zip(STUDENT, LABELS)) / 2
    kd = temp**2 * sum(hand_kl(tr, sr, temp) for sr, tr in zip(STUDENT, TEACHER)) / 2
    loss = DistillationLoss("ce+kd", temperature=temp, alpha=alpha)(s, y, t)
    assert loss.item() == pytest.approx((1 - alpha) * ce + alpha * kd, rel=1e-5)


def test_teacher_logits_get_no_gradient():
    s, _, y = tensors()
    t = torch.tensor(TEACHER, requires_grad=True)
    for kind in ("distributional", "kd", "ce+kd"):
        DistillationLoss(kind)(s, y, t).backward()
    assert t.grad is None and s.grad is not None


def test_attention_loss_by_hand():
    # one sample, 2 channels, 1x2 positions: q = mean_c(A^2) = [(1+9)/2, (4+0)/2] = [5, 2] -> /sqrt(29)
    student = torch.tensor([[[[1.0, 2.0]], [[3.0, 0.0]]]])
    teacher = torch.tensor([[[[1.0, 1.0]], [[1.0, 1.0]]]])  # q = [1, 1] / sqrt(2)
    q_s, q_t = [5 / math.sqrt(29), 2 / math.sqrt(29)], [1 / math.sqrt(2)] * 2
    torch.testing.assert_close(attention_map(student), torch.tensor([q_s]))
    per_layer = sum((a - b) ** 2 for a, b in zip(q_s, q_t)) / 2
    assert attention_loss([student, student], [teacher, teacher]).item() == pytest.approx(2 * per_layer, rel=1e-6)
    # scale invariance of the normalised maps
    assert attention_loss([3 * student], [teacher]).item() == pytest.approx(per_layer, rel=1e-5)


def test_distillation_loss_adds_weighted_attention():
    s, t, y = tensors()
    fs, ft = [torch.randn(2, 4, 3, 3)], [torch.randn(2, 8, 3, 3)]
    base = DistillationLoss("distributional")(s, y, t)
    with_at = DistillationLoss("distributional", at_weight=1e3)(s, y, t, fs, ft)
    assert (with_at - base).item() == pytest.approx(1e3 * attention_loss(fs, ft).item(), rel=1e-5)
    with pytest.raises(ValueError, match="student_feats"):
        DistillationLoss("kd", at_weight=1.0)(s, y, t)
    with pytest.raises(ValueError, match="spatial size"):
        attention_loss([torch.randn(2, 4, 3, 3)], [torch.randn(2, 4, 6, 6)])


@pytest.mark.parametrize("kwargs,match", [
    (dict(kind="kl"), "unknown distillation loss"),
    (dict(kind="distributional", temperature=2.0), "temperature 1"),
    (dict(kind="kd", temperature=0.0), "positive"),
    (dict(kind="ce+kd", alpha=1.5), r"\[0, 1\]"),
])
def test_bad_loss_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DistillationLoss(**kwargs)


def test_block_names_pair_torchvision_and_onebit_resnets():
    expected = [f"layer{i}.{j}" for i in range(1, 5) for j in range(2)]
    assert block_names(torchvision.models.resnet18()) == expected
    assert block_names(create_model("strong_baseline", 10, method="bnn", image_size=32)) == expected


def test_feature_hooks_keep_the_latest_forward_only():
    model = create_model("reactnet_r18", 10, method="bnn", image_size=32).eval()
    hooks = FeatureHooks(model, ["layer1.1", "layer3.0"])
    with pytest.raises(RuntimeError, match="has not run"):
        hooks.outputs()
    x1, x2 = torch.randn(1, 3, 32, 32), torch.randn(1, 3, 32, 32)
    model(x1)
    first = [f.clone() for f in hooks.outputs()]
    assert [f.shape for f in first] == [(1, 64, 8, 8), (1, 256, 2, 2)]
    model(x2)
    assert not torch.equal(hooks.outputs()[0], first[0])
    hooks.remove()
    model(x1)
    with pytest.raises(RuntimeError):
        hooks.outputs()
    with pytest.raises(ValueError, match="did you mean 'layer1.1'"):
        FeatureHooks(model, ["layer1.11"])


def test_teacher_is_frozen_and_stays_in_eval_mode(tmp_path):
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=10)
    torch.save({"model": net.state_dict()}, tmp_path / "teacher.pth")
    teacher = Teacher.from_checkpoint("torchvision:resnet18", tmp_path / "teacher.pth", 10,
                                      feature_layers=block_names(net))
    student = nn.Sequential(teacher)  # a parent's .train() must not reach the teacher's BN
    student.train()
    assert not teacher.training and not any(m.training for m in teacher.modules())
    assert not any(p.requires_grad for p in teacher.parameters())
    x = torch.randn(2, 3, 32, 32)
    out = teacher(x)
    assert not out.requires_grad
    torch.testing.assert_close(out, net.eval()(x))  # eval-mode BN, same weights
    assert len(teacher.features()) == 8


def test_teacher_from_onebit_model_and_bare_state_dict(tmp_path):
    fp = create_model("birealnet18", 10, method="bnn", binary_type=(False, False), image_size=32)
    torch.save(fp.state_dict(), tmp_path / "sd.pth")
    teacher = Teacher.from_checkpoint("birealnet18", tmp_path / "sd.pth", 10, method="bnn",
                                      binary_type=(False, False), image_size=32)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(teacher(x), fp.eval()(x))
    with pytest.raises(CheckpointError, match="does not fit"):
        Teacher.from_checkpoint("birealnet34", fp.state_dict(), 10, method="bnn")


def test_attention_distillation_end_to_end_gives_student_gradients():
    torch.manual_seed(0)
    teacher = Teacher(torchvision.models.resnet18(num_classes=10), block_names(torchvision.models.resnet18()))
    student = create_model("strong_baseline", 10, method="bnn", image_size=32, gate=True)
    hooks = FeatureHooks(student, block_names(student))
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([1, 7])
    criterion = DistillationLoss("ce+kd", temperature=1.0, alpha=0.75, at_weight=30.0)
    loss = criterion(student(x), y, teacher(x), hooks.outputs(), teacher.features())
    loss.backward()
    assert torch.isfinite(loss) and student.layer2[0].unit1.post.squeeze.weight.grad.abs().sum() > 0


# ---- two-stage load ------------------------------------------------------------------------------------

class ScaledSign(Quantizer):
    """A weight quantizer with state of its own, set from the weights at build (as RBNN's alpha)."""

    def __init__(self):
        super().__init__()
        self.sign = SteSign()

    def build(self, layer):
        self.register_buffer("scale", layer.weight.detach().abs().mean())

    def forward(self, w):
        return self.sign(w) * self.scale


WITH_STATE = Method("scaled_test", input_quantizer="ste_sign", weight_quantizer=ScaledSign)


def stage_model(binary_type, name="resnet20_bireal_1w1a", method=WITH_STATE, **kwargs):
    return create_model(name, 10, method=method, binary_type=binary_type, **kwargs)


def test_stage2_gets_every_stage1_weight(tmp_path):
    torch.manual_seed(0)
    stage1 = stage_model((True, False))
    for p in stage1.parameters():  # make the stage-1 state distinguishable from a fresh init
        nn.init.uniform_(p, -1, 1)
    torch.save({"model": stage1.state_dict(), "epoch": 3}, tmp_path / "checkpoint.pth")
    stage2 = stage_model((True, True))
    report = load_stage1(stage2, tmp_path)  # a run folder: its checkpoint.pth
    own = stage2.state_dict()
    assert all(torch.equal(own[k], v) for k, v in stage1.state_dict().items())
    assert report.new and all(".weight_quantizer." in k for k in report.new) and not report.dropped
    conv = stage2.layer3[2].unit2.conv
    assert "layer3.2.unit2.conv.weight_quantizer" in report.rebuilt
    assert conv.weight_quantizer.scale == stage1.layer3[2].unit2.conv.weight.abs().mean()  # built on stage-1 weights
    assert len(report.loaded) == len(stage1.state_dict())
    x = torch.randn(2, 3, 32, 32)
    assert not torch.equal(stage1.eval()(x), stage2.eval()(x))  # the weights are binary now


def test_stage1_load_accepts_module_prefix_and_plain_state_dicts():
    stage1 = stage_model((True, False), method="bnn")
    prefixed = {f"module.{k}": v for k, v in stage1.state_dict().items()}
    report = load_stage1(stage_model((True, True), method="bnn"), prefixed)
    assert report.new == report.dropped == report.rebuilt == []


def test_quantizer_state_of_stage1_only_is_dropped_not_an_error():
    stage1 = stage_model((False, True))  # the other stage-1 choice: binary weights, real activations
    report = load_stage1(stage_model((True, True), method="bnn"), {"model": stage1.state_dict()})
    assert report.dropped and all(".weight_quantizer." in k for k in report.dropped)


def test_official_reactnet_a_loading_bug_is_an_error():
    """Step 2 with a flat ``weights`` parameter where step 1 saved 4-D ``weight`` (the official ReActNet-A bug)."""
    state = stage_model((True, False), "reactnet_a", method="bnn", image_size=32).state_dict()
    renamed = {(k[: -len("weight")] + "weights" if k.endswith("conv3x3.weight") else k):
               (v.flatten(1) if k.endswith("conv3x3.weight") else v) for k, v in state.items()}
    stage2 = stage_model((True, True), "reactnet_a", method="bnn", image_size=32)
    message = r"missing: features\.0\.conv3x3\.weight.*unexpected: features\.0\.conv3x3\.weights"
    with pytest.raises(CheckpointError, match=message):
        load_stage1(stage2, renamed)


def test_stage1_load_errors_name_the_mismatch():
    small = stage_model((True, False)).state_dict()
    with pytest.raises(CheckpointError, match=r"shape mismatch: .*fc\.weight \(10, 64\) vs \(100, 64\)"):
        load_stage1(create_model("resnet20_bireal_1w1a", 100, method="bnn"), small)
    with pytest.raises(CheckpointError, match=r"missing: layer1\.0\.unit1\.conv\.weight"):
        load_stage1(stage_model((True, True)), {k: v for k, v in small.items() if not k.startswith("layer1.0.unit1.")})
    with pytest.raises(ValueError, match="expected a checkpoint"):
        load_stage1(stage_model((True, True)), {"model": 3})
    with pytest.raises(CheckpointError, match="stage-1 checkpoint not found: .*run the step-1 recipe first"):
        load_stage1(stage_model((True, True)), "/nonexistent/stage1.pth")
