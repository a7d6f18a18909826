"""IR-Net (Libra-PB + EDE) and IE-Net against their formulas."""
import math

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
