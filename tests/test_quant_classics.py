"""Bi-Real, ReActNet, XNOR-Net(++), BNN, DoReFa, ReCU and FDA against their formulas."""
import math

import pytest
import torch

from onebit.layers import BinaryConv2d, BinaryLinear
from onebit.quant.scale import LearnedScale
from onebit.quant import ApproxSign, SteSign, get_method
from onebit.quant.bireal import MagnitudeAwareSign
from onebit.quant.bnn import BnnWeight
from onebit.quant.dorefa import DorefaInput, DorefaWeight
from onebit.quant.fda import FdaInput, FdaWeight
from onebit.quant.functional import fda_grad, sign
from onebit.quant.reactnet import RSign
from onebit.quant.recu import RecuInput, RecuWeight
from onebit.quant.xnor import XnorWeight

GRID = torch.linspace(-2, 2, 401, dtype=torch.float64)


def grad_on_grid(q, x=GRID):
    x = x.clone().requires_grad_()
    out = q(x)
    out.sum().backward()
    return out.detach(), x.grad


def weight_and_grad(q, shape=(4, 3, 3, 3), seed=0):
    torch.manual_seed(seed)
    w = (torch.randn(shape, dtype=torch.float64) * 0.8).requires_grad_()
    g = torch.randn(shape, dtype=torch.float64)
    out = q(w)
    (grad,) = torch.autograd.grad(out, w, g)
    return w.detach(), g, out.detach(), grad


def mean_abs(w):
    return w.abs().reshape(w.shape[0], -1).mean(1).reshape(-1, 1, 1, 1)


def test_approx_sign():
    out, grad = grad_on_grid(ApproxSign())
    assert torch.equal(out, sign(GRID))
    assert torch.allclose(grad, torch.clamp(2 - 2 * GRID.abs(), min=0))
    assert grad[200].item() == 2.0  # peak at 0


@pytest.mark.parametrize("variant", ["paper", "pytorch", "caffe"])
def test_magnitude_aware_sign_gradients(variant):
    w, g, out, grad = weight_and_grad(MagnitudeAwareSign(variant))
    alpha = mean_abs(w)
    assert torch.allclose(out, alpha * sign(w))
    inside = (w.abs() <= 1).double()
    expected = {"paper": alpha * inside * g, "pytorch": inside * g, "caffe": g}[variant]
    assert torch.allclose(grad, expected)


def test_reactnet_default_gradient_is_the_official_one():
    assert get_method("reactnet").options() == {"gradient": "pytorch"}
    assert get_method("bireal").options() == {"gradient": "paper"}
    with pytest.raises(ValueError, match="gradient"):
        MagnitudeAwareSign("larq")


def test_rsign_threshold_and_gradients():
    torch.manual_seed(1)
    conv = BinaryConv2d(3, 2, 3, padding=1, input_quantizer=RSign, weight_quantizer=None)
    q = conv.input_quantizer
    assert q.threshold.shape == (1, 3, 1, 1) and torch.all(q.threshold == 0)
    with torch.no_grad():
        q.threshold.copy_(torch.tensor([-0.5, 0.0, 0.7]).view(1, 3, 1, 1))
    x = torch.randn(2, 3, 4, 4, dtype=torch.float32, requires_grad=True)
    g = torch.randn(2, 3, 4, 4)
    out = q(x)
    shifted = x.detach() - q.threshold.detach()
    assert torch.equal(out, sign(shifted))
    gx, ga = torch.autograd.grad(out, (x, q.threshold), g)
    f_prime = torch.clamp(2 - 2 * shifted.abs(), min=0)
    assert torch.allclose(gx, g * f_prime)
    assert torch.allclose(ga, -(g * f_prime).sum((0, 2, 3), keepdim=True), atol=1e-5)
    assert BinaryLinear(5, 2, input_quantizer=RSign).input_quantizer.threshold.shape == (1, 5)


def test_xnor_weight_paper_gradient():
    w, g, out, grad = weight_and_grad(XnorWeight())
    alpha = mean_abs(w)
    n = 27
    assert torch.allclose(out, alpha * sign(w))
    assert torch.allclose(grad, g * (1 / n + alpha * (w.abs() <= 1).double()))


def test_xnorpp_learned_scale():
    conv = BinaryConv2d(3, 4, 3, stride=2, padding=1, input_quantizer=SteSign, weight_quantizer=SteSign,
                        output_scale=LearnedScale)
    s = conv.output_scale
    assert s.channel.shape == (4, 1, 1) and s.row.shape == (64, 1) and s.column.shape == (64,)
    with torch.no_grad():
        s.channel.copy_(torch.arange(1.0, 5.0).view(4, 1, 1))
        s.row.copy_(torch.arange(64.0).view(64, 1) / 10)
        s.column.uniform_()
    x = torch.randn(2, 3, 10, 10)
    plain = torch.nn.functional.conv2d(sign(x), sign(conv.weight), None, 2, 1)
    expected = plain * s.channel * s.row[:5] * s.column[:5]
    assert torch.allclose(conv(x), expected)
    conv(x).sum().backward()
    assert s.row.grad[5:].abs().sum() == 0 and s.row.grad[:5].abs().sum() > 0  # unused rows: no gradient
    with pytest.raises(ValueError, match="max_side"):
        conv(torch.randn(1, 3, 140, 140))
    channel_only = get_method("xnorpp").with_options(shape="channel")
    layer = BinaryConv2d(3, 4, 3, **{"output_scale": channel_only.conv_kwargs["output_scale"]})
    assert not hasattr(layer.output_scale, "row")


def test_bnn_identity_gradient_and_clipping_hook():
    torch.manual_seed(2)
    conv = BinaryConv2d(3, 2, 3, input_quantizer=SteSign, weight_quantizer=BnnWeight)
    with torch.no_grad():
        conv.weight.mul_(10)
    w, g, out, grad = weight_and_grad(conv.weight_quantizer)
    assert torch.equal(out, sign(w)) and torch.equal(grad, g)  # identity, no clip in the backward
    for m in conv.modules():  # what the engine does after every optimizer step
        if hasattr(m, "after_step"):
            m.after_step()
    assert conv.weight.abs().max() == 1.0
    out, grad = grad_on_grid(SteSign())  # activations: clipped STE
    assert torch.equal(grad, (GRID.abs() <= 1).double())


def test_dorefa():
    x = torch.tensor([-0.3, 0.0, 0.3, 0.5, 0.51, 1.0, 1.7], dtype=torch.float64)
    out, grad = grad_on_grid(DorefaInput(), x)
    assert out.tolist() == [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0]  # round half to even: 0.5 -> 0
    assert grad.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0]
    out, grad = grad_on_grid(DorefaInput(signed=True), x)
    assert out.tolist() == [-1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    w, g, out, grad = weight_and_grad(DorefaWeight())
    assert torch.allclose(out, w.abs().mean() * sign(w)) and torch.equal(grad, g)
    w, g, out, grad = weight_and_grad(DorefaWeight(scale="channel"))
    assert torch.allclose(out, mean_abs(w) * sign(w))


def test_recu_weight_clamp_and_schedule():
    torch.manual_seed(3)
    conv = BinaryConv2d(3, 4, 3, input_quantizer=RecuInput, weight_quantizer=RecuWeight)
    q = conv.weight_quantizer.double()
    assert torch.all((q.alpha >= 0) & (q.alpha < 1)) and q.tau.item() == 1.0
    w, g, out, grad = weight_and_grad(q)
    assert torch.equal(out, sign(w - w.mean((1, 2, 3), keepdim=True)) * q.alpha)  # tau = 1: no clamp
    q.on_epoch_start(0, 10)
    assert q.tau.item() == pytest.approx(0.85)
    w, g, out, grad = weight_and_grad(q, seed=4)

    def w1_of(w):  # std 2 sqrt 2 per output channel
        w0 = w - w.mean((1, 2, 3), keepdim=True)
        return w0 / (torch.sqrt(w0.var((1, 2, 3), keepdim=True) + 1e-5) / (2 * math.sqrt(2)))

    w1 = w1_of(w)
    bound = -w1.abs().mean() * math.log(2 - 2 * 0.85)  # Laplace quantile of |w|
    inside = (w1.abs() <= bound).double()
    assert 0 < inside.mean() < 1
    assert torch.equal(out, sign(w1.clamp(-bound, bound)) * q.alpha.detach())
    # sign: identity backward; clamp: zero outside; times alpha
    (expected,) = torch.autograd.grad(w1_of(w.requires_grad_()), w, g * q.alpha.detach() * inside)
    assert torch.allclose(grad, expected)


def test_recu_activation_normalised_in_training_only():
    q = RecuInput()
    x = (torch.randn(2, 3, 4, 4, dtype=torch.float64) * 3).requires_grad_()
    (g_eval,) = torch.autograd.grad(q.eval()(x).sum(), x)
    assert torch.allclose(g_eval, torch.clamp(2 - 2 * x.detach().abs(), min=0))
    out = q.train()(x)
    assert torch.equal(out, sign(x.detach()))
    (g_train,) = torch.autograd.grad(out.sum(), x)
    assert not torch.allclose(g_train, g_eval)


@pytest.mark.parametrize("n", [9, 13, 17])
def test_fda_gradient_closed_form_equals_the_series(n):
    x = torch.linspace(-1.5, 1.5, 3001, dtype=torch.float64)
    series = 4 * 0.1 / math.pi * sum(torch.cos((2 * i + 1) * 0.1 * x) for i in range(n + 1))
    series = series * (x.abs() <= 1)
    assert torch.allclose(fda_grad(x, torch.tensor(n)), series, atol=1e-9)


def test_fda_noise_vanishes_at_the_last_epoch():
    torch.manual_seed(5)
    conv = BinaryConv2d(8, 4, 3, padding=1, input_quantizer=FdaInput, weight_quantizer=FdaWeight)
    a, q = conv.input_quantizer, conv.weight_quantizer
    assert q.noise.fc1.out_features == 72 // 64 and a.noise.fc1.out_features == 8 // 4
    assert a.n.item() == 9 and a.noise_weight.item() == pytest.approx(0.1)
    x = torch.randn(2, 8, 5, 5)
    assert not torch.equal(a(x), sign(x))
    conv(x).sum().backward()
    assert all(p.grad.abs().sum() > 0 for p in [*a.noise.parameters(), *q.noise.parameters()])
    for m in (a, q):
        m.on_epoch_start(99, 100)
    assert a.n.item() == 17 and a.noise_weight.item() == 0.0
    assert torch.equal(a(x), sign(x))
    assert torch.equal(q(conv.weight), sign(conv.weight) * mean_abs(conv.weight.detach()))
    x.requires_grad_()
    a(x).sum().backward()
    assert torch.allclose(x.grad, fda_grad(x.detach(), a.n), atol=1e-6)
