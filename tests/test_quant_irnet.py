"""IR-Net (Libra-PB + EDE) and IE-Net against their formulas."""
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from onebit.layers import BinaryConv2d
from onebit.quant import get_method
from onebit.quant.functional import ede_grad, sign, sign_with_surrogate, standardize
from onebit.quant.ienet import DualShiftSign, IeNetWeight, ienet_grad
from onebit.quant.irnet import EdeSign, LibraPBWeight
from onebit.quant.schedules import log_linear_temperature


@pytest.mark.parametrize("epoch", [0, 100, 300, 399])
def test_ede_on_a_grid(epoch):
    t = log_linear_temperature(epoch, 400, 1e-3, 1e1)  # the ResNet-20 1w1a script's schedule
    q = EdeSign().double()
    q.set_temperature(t)
    k = max(1 / t, 1)
    assert q.k.item() == pytest.approx(k) and q.t.item() == pytest.approx(t)
    x = torch.linspace(-5, 5, 1001, dtype=torch.float64).requires_grad_()
    out = q(x)
    assert torch.equal(out, sign(x.detach()))
    out.sum().backward()
    kq, tq = q.k.item(), q.t.item()
    assert torch.allclose(x.grad, kq * tq * (1 - torch.tanh(tq * x.detach()) ** 2))
    assert x.grad[500].item() == pytest.approx(kq * tq)  # k t = 1 while t < 1


def test_libra_pb_forward_scale_and_backward():
    torch.manual_seed(0)
    w = torch.randn(6, 4, 3, 3, dtype=torch.float64)
    # a heavy-tailed channel: mean|w_std| < 2**-0.5, so its power-of-two scale is 1/2
    w[5] = 0.0
    w[5, 0, 0, :] = torch.tensor([5.0, -5.0, 4.0])
    w.requires_grad_()
    q = LibraPBWeight().double()
    q.set_temperature(0.2)
    out = q(w)
    ws = standardize(w.detach())
    shift = torch.round(torch.log2(ws.abs().reshape(6, -1).mean(1)))
    assert shift[:5].eq(0).all() and shift[5].item() <= -1
    scale = (2.0 ** shift).reshape(6, 1, 1, 1)
    assert torch.equal(out, sign(ws) * scale)
    # zero mean per channel: balanced signs, maximal entropy
    assert torch.allclose(ws.reshape(6, -1).mean(1), torch.zeros(6, dtype=torch.float64), atol=1e-12)
    g = torch.randn_like(w)
    (grad,) = torch.autograd.grad(out, w, g)
    # EDE through the standardisation, scaled by the detached 2^s
    (expected,) = torch.autograd.grad(standardize(w), w, ede_grad(ws, q.k, q.t) * scale * g)
    assert torch.allclose(grad, expected)


def ienet_conv(**kw):
    method = get_method("ienet")
    return BinaryConv2d(4, 6, 3, padding=1, input_quantizer=method.input_quantizer,
                        weight_quantizer=method.weight_quantizer, **kw)


@pytest.mark.parametrize("pad_value", [0.0, 1.0])
def test_ienet_dual_shift_equals_two_convolutions(pad_value):
    torch.manual_seed(1)
    conv = ienet_conv(pad_value=pad_value)
    a, w = conv.input_quantizer, conv.weight_quantizer
    assert a.branches == 2 and w.dual
    assert torch.all((w.branch_weight >= 0) & (w.branch_weight < 1e-3))
    with torch.no_grad():
        a.shifts[0].normal_()
        a.shifts[1].normal_()
    x = torch.randn(2, 4, 5, 5)
    w0 = conv.weight - conv.weight.mean((1, 2, 3), keepdim=True)
    bw = sign(w0 / torch.sqrt(w0.var((1, 2, 3), keepdim=True) + 1e-5))

    def branch(s):
        return F.conv2d(F.pad(sign(x + s), (1, 1, 1, 1), value=pad_value), bw) * w.alpha.view(1, -1, 1, 1)

    expected = branch(a.shifts[0]) + w.branch_weight.view(1, -1, 1, 1) * branch(a.shifts[1])
    assert torch.allclose(conv(x), expected, atol=1e-5)


def test_ienet_symmetry_broken_and_surrogates():
    torch.manual_seed(2)
    conv = ienet_conv()
    for m in conv.modules():
        if hasattr(m, "set_temperature"):
            m.set_temperature(0.05)
    conv(torch.randn(2, 4, 5, 5)).square().sum().backward()
    s1, s2 = (s.grad for s in conv.input_quantizer.shifts)
    assert not torch.allclose(s1, s2)  # the community copy's two shifts would get identical gradients
    # surrogate: k max(0, sqrt3 t - 1.5 t^2 |x|); activations use k = 1, t = max(t, 1)
    x = torch.linspace(-3, 3, 601, dtype=torch.float64).requires_grad_()
    k, t = torch.tensor(20.0, dtype=torch.float64), torch.tensor(0.05, dtype=torch.float64)
    sign_with_surrogate(x, ienet_grad, k, t).sum().backward()
    closed = 20.0 * torch.clamp(math.sqrt(3) * 0.05 - 1.5 * 0.05**2 * x.detach().abs(), min=0)
    assert torch.allclose(x.grad, closed)
    assert conv.weight_quantizer.k.item() == pytest.approx(20.0)
    assert conv.input_quantizer.t.item() == 1.0 and conv.input_quantizer.k.item() == 1.0


def test_ienet_activation_normalisation_only_in_training():
    torch.manual_seed(3)
    q = ienet_conv().input_quantizer
    x = (torch.randn(2, 4, 5, 5) * 3).requires_grad_()
    q.train()
    (g_train,) = torch.autograd.grad(q(x).sum(), x)
    q.eval()
    out = q(x)
    (g_eval,) = torch.autograd.grad(out.sum(), x)
    assert torch.equal(out, torch.cat([sign(x.detach()), sign(x.detach())], 1))
    assert not torch.allclose(g_train, g_eval)


def test_ienet_falls_back_to_one_branch():
    real_weights = BinaryConv2d(4, 6, 3, padding=1, input_quantizer=DualShiftSign, weight_quantizer=None)
    assert real_weights.input_quantizer.branches == 1
    assert real_weights(torch.randn(1, 4, 5, 5)).shape == (1, 6, 5, 5)
    real_inputs = BinaryConv2d(4, 6, 3, padding=1, input_quantizer=None, weight_quantizer=IeNetWeight)
    assert not real_inputs.weight_quantizer.dual
    with pytest.raises(ValueError, match="groups=1"):
        BinaryConv2d(4, 4, 3, padding=1, groups=2, input_quantizer=DualShiftSign, weight_quantizer=IeNetWeight)


# ---------------------------------------------------------------- the ResNet-20 1w1a recipe against the official code
# htqin/IR-Net CIFAR-10/ResNet20/1w1a: resnet.py (model, init), modules/ir_1w1a.py (IRConv2d), trainer.py (EDE
# schedule, loaders). Each test restates one of its facts as a formula and checks the recipe's network against it.

REPO = Path(__file__).resolve().parent.parent
IRNET_RESNET20 = "configs/irnet/cifar10_resnet20_1w1a.yaml"


def irnet_resnet20(argv=()):
    from onebit.models.config import build_model
    from onebit.train.config import resolve

    config = resolve(["--config", str(REPO / IRNET_RESNET20), *argv])
    return build_model(config, 10, 3, 32), config


def binary_convs(model):
    return [m for m in model.modules() if isinstance(m, BinaryConv2d)]


def test_irnet_resnet20_init_is_the_official_one(one_thread):
    """``_weights_init``: kaiming_normal (fan-in, gain sqrt 2) on every Conv2d (IRConv2d included) and on the
    Linear; BatchNorm2d and the head's BatchNorm1d at PyTorch's 1/0; the Linear's bias PyTorch's uniform."""
    torch.manual_seed(0)
    model, _ = irnet_resnet20()
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 19 and len(binary_convs(model)) == 18  # the stem is real
    for m in convs + [model.fc]:
        fan_in = m.weight[0].numel()
        assert m.weight.std().item() == pytest.approx(math.sqrt(2.0 / fan_in), rel=0.15), m
        assert abs(m.weight.mean().item()) < 0.2 * math.sqrt(2.0 / fan_in)
    bound = 1 / math.sqrt(model.fc.in_features)
    assert model.fc.bias.abs().max() <= bound and model.fc.bias.abs().max() > 0
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert isinstance(model.head_bn, torch.nn.BatchNorm1d) and len(bns) == 1 + 18 + 1
    assert all(torch.all(m.weight == 1) and torch.all(m.bias == 0) for m in bns)


@pytest.mark.parametrize("epoch", [0, 5, 9])
def test_irnet_resnet20_ede_schedule_on_weights_and_activations(epoch, one_thread):
    """trainer.py: ``t = 10^(log Tmin + (log Tmax - log Tmin) e / E)`` with Tmin 1e-3, Tmax 10, ``k = 1/t`` while
    ``t < 1`` else 1, set before epoch ``e`` on both the weights and the activations of all 18 IRConv2d."""
    from onebit.quant.schedules import set_epoch_temperature

    model, config = irnet_resnet20(["--epochs", "10"])
    assert (config["Tmin"], config["Tmax"]) == (1e-3, 10.0)
    set_epoch_temperature(model, epoch, config["epochs"], config["Tmin"], config["Tmax"])
    t = 10 ** (-3 + 4 * epoch / 10)
    k = 1 / t if t < 1 else 1.0
    for conv in binary_convs(model):
        for q in (conv.input_quantizer, conv.weight_quantizer):
            assert q.t.item() == pytest.approx(t, rel=1e-6) and q.k.item() == pytest.approx(k, rel=1e-6)


def _official_forward(model, x, k, t):
    """The official ResNet-20 1w1a forward (train mode) written from its formulas with the model's parameters."""

    def ede_sign(v):  # forward torch.sign, backward k t (1 - tanh^2(t v))
        surrogate = k * torch.tanh(t * v)
        return surrogate + (torch.sign(v) - surrogate).detach()

    def ir_conv(a, conv):
        w = conv.weight
        bw = w - w.view(w.size(0), -1).mean(-1).view(-1, 1, 1, 1)
        bw = bw / bw.view(bw.size(0), -1).std(-1).view(-1, 1, 1, 1)
        sw = torch.pow(2.0, torch.round(torch.log2(bw.abs().view(bw.size(0), -1).mean(-1)))).view(-1, 1, 1, 1)
        return F.conv2d(ede_sign(a), ede_sign(bw) * sw.detach(), None, conv.stride, 1)

    def bn(v, m):
        return F.batch_norm(v, None, None, m.weight, m.bias, training=True, eps=m.eps)

    out = F.hardtanh(bn(F.conv2d(x, model.conv1.weight, None, 1, 1), model.bn1))
    for stage in (model.layer1, model.layer2, model.layer3):
        for block in stage:
            c1, c2 = block.unit1.conv, block.unit2.conv
            shortcut = out
            if c1.stride[0] != 1 or c1.in_channels != c1.out_channels:  # option A
                pad = (c1.out_channels - c1.in_channels) // 2
                shortcut = F.pad(out[:, :, ::2, ::2], (0, 0, 0, 0, pad, pad))
            y = F.hardtanh(bn(ir_conv(out, c1), block.unit1.post) + shortcut)
            out = F.hardtanh(bn(ir_conv(y, c2), block.unit2.post) + y)
    out = F.avg_pool2d(out, out.size(3)).view(out.size(0), -1)
    return F.linear(bn(out, model.head_bn), model.fc.weight, model.fc.bias)


@pytest.mark.parametrize("epoch", [0, 9])
def test_irnet_resnet20_forward_and_gradients_match_the_official_network(epoch, one_thread):
    """Stem hardtanh, ``hardtanh(BN(conv) + shortcut)`` twice per block with option-A downsampling, pool -> BN1d
    -> Linear; Libra-PB (per-channel standardisation with the unbiased std, detached 2^round(log2 mean|W|)) and
    EDE on weights and activations: logits and every gradient equal the official formulas'."""
    from onebit.quant.schedules import set_epoch_temperature

    torch.manual_seed(epoch)
    model, config = irnet_resnet20(["--epochs", "10"])
    model = model.double().train()
    t = set_epoch_temperature(model, epoch, 10, config["Tmin"], config["Tmax"])
    x = torch.randn(4, 3, 32, 32, dtype=torch.float64)
    labels = torch.tensor([0, 3, 7, 9])
    params = dict(model.named_parameters())
    ours = model(x)
    grads = torch.autograd.grad(F.cross_entropy(ours, labels), list(params.values()))
    reference = _official_forward(model, x, max(1 / t, 1.0), t)
    expected = torch.autograd.grad(F.cross_entropy(reference, labels), list(params.values()))
    assert torch.allclose(ours, reference, atol=1e-9)
    for name, g, e in zip(params, grads, expected):
        assert torch.allclose(g, e, rtol=1e-6, atol=1e-9 * e.abs().max().item()), name


def test_irnet_recipes_drop_the_last_training_batch(monkeypatch, one_thread):
    """Every IR-Net CIFAR trainer builds its training loader with ``drop_last=True``; the recipes set
    ``drop_last`` and the engine hands it to the loader (1437 digits at batch 128: 11 batches, not 12)."""
    from onebit.train import engine
    from onebit.train.config import resolve

    recipes = sorted((REPO / "configs/irnet").glob("cifar10_*.yaml"))
    assert len(recipes) == 4 and all(resolve(["--config", str(r)])["drop_last"] for r in recipes)
    seen = {}
    real_build_data = engine.build_data
    monkeypatch.setattr(engine, "build_data", lambda *a, **k: seen.update(k) or real_build_data(*a, **k))
    trainer = engine.Trainer(resolve(["--config", str(REPO / IRNET_RESNET20), "--dataset", "digits"]))
    assert seen["drop_last"] is True and len(trainer.data.train) == 1437 // 128
    trainer = engine.Trainer(resolve(["--config", str(REPO / IRNET_RESNET20), "--dataset", "digits",
                                      "--no-drop_last"]))
    assert len(trainer.data.train) == -(-1437 // 128)
    trainer = engine.Trainer(resolve(["--config", str(REPO / IRNET_RESNET20), "--dataset", "digits", "--shards", "2"]))
    assert len(trainer.data.train) == 1437 // 128  # the shards of the exact mode drop it too
