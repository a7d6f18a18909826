"""RBNN against its formulas (Lin et al. 2020 and its official code)."""
import math

import pytest
import torch

from onebit.layers import BinaryConv2d
from onebit.models import create_model
from onebit.quant import get_method, kernels
from onebit.quant.functional import sign, sign_with_surrogate, standardize, training_aware_grad
from onebit.quant.rbnn import RbnnInput, RbnnWeight, bi_rotation, get_ab, random_orthogonal, rotation_objective
from onebit.quant.schedules import log_linear_temperature


pytestmark = pytest.mark.usefixtures("one_thread")


def rbnn_conv(cin=16, cout=8, **options):
    method = get_method("rbnn").with_options(**options)
    return BinaryConv2d(cin, cout, 3, padding=1, input_quantizer=method.input_quantizer,
                        weight_quantizer=method.weight_quantizer)


@pytest.mark.parametrize(
    "n, ab",
    [(144, (12, 12)), (288, (16, 18)), (576, (24, 24)), (1152, (32, 36)), (2304, (48, 48)),
     (4608, (64, 72)), (64, (8, 8)), (128, (8, 16)), (256, (16, 16)), (9, (3, 3)), (13, (1, 13))],
)
def test_get_ab_table(n, ab):
    assert get_ab(n) == ab


def test_random_orthogonal_is_orthogonal_and_seeded():
    torch.manual_seed(3)
    q = random_orthogonal(18)
    assert torch.allclose(q @ q.t(), torch.eye(18), atol=1e-5)
    torch.manual_seed(3)
    assert torch.equal(random_orthogonal(18), q)


def loop_bi_rotation(x, r1, r2, iterations=3):
    """The reference's per-channel formulation (Python sums over channels, torch.svd's V)."""
    for _ in range(iterations):
        b = torch.sign(r1.t() @ x @ r2)
        d1 = sum(bi @ r2.t() @ xi.t() for bi, xi in zip(b, x))
        u1, _, v1 = torch.svd(d1)
        r1 = v1 @ u1.t()
        d2 = sum(xi.t() @ r1 @ bi for xi, bi in zip(x, b))
        u2, _, v2 = torch.svd(d2)
        r2 = u2 @ v2.t()
    return r1, r2


def test_vectorised_update_equals_per_channel_loop():
    torch.manual_seed(0)
    x = standardize(torch.randn(32, 16, 3, 3, dtype=torch.float64)).reshape(32, 12, 12)
    r1, r2 = random_orthogonal(12).double(), random_orthogonal(12).double()
    v1, v2 = bi_rotation(x, r1, r2)
    l1, l2 = loop_bi_rotation(x, r1, r2)
    assert torch.allclose(v1, l1, atol=1e-10) and torch.allclose(v2, l2, atol=1e-10)


def test_rotations_stay_orthogonal_and_objective_never_decreases():
    torch.manual_seed(1)
    x = standardize(torch.randn(64, 32, 3, 3)).reshape(64, 16, 18)
    r1, r2 = random_orthogonal(16), random_orthogonal(18)
    objective = [rotation_objective(x, r1, r2).item()]
    for _ in range(6):
        r1, r2 = bi_rotation(x, r1, r2, iterations=1)
        objective.append(rotation_objective(x, r1, r2).item())
        assert torch.allclose(r1 @ r1.t(), torch.eye(16), atol=1e-5)
        assert torch.allclose(r2 @ r2.t(), torch.eye(18), atol=1e-5)
    assert all(b >= a * (1 - 1e-6) for a, b in zip(objective, objective[1:])), objective
    assert objective[-1] > objective[0]
    # about half of the signs flip relative to the unrotated filters (the paper's ~50%)
    flips = (sign(r1.t() @ x @ r2) != sign(x)).float().mean().item()
    assert 0.4 < flips < 0.6


def test_weight_forward_formula_and_init():
    torch.manual_seed(2)
    conv = rbnn_conv()
    q = conv.weight_quantizer
    default_w = conv.weight.detach().clone()
    n = 16 * 9
    # alpha = mean|W| of PyTorch's default init (kaiming-uniform a=sqrt5: E|w| = 1/(2 sqrt n))
    assert torch.allclose(q.alpha.flatten(), default_w.abs().reshape(8, -1).mean(1))
    assert q.alpha.mean().item() == pytest.approx(1 / (2 * math.sqrt(n)), rel=0.1)
    assert torch.all(q.theta == torch.tensor(math.pi / 2))
    with torch.no_grad():
        q.theta.uniform_(0, 3)
    w = conv.weight
    w2 = standardize(w.detach())
    wr = (q.R1.t() @ w2.reshape(8, 12, 12) @ q.R2).reshape_as(w2)
    s = torch.sin(q.theta).abs()
    expected = sign(w2 + s * (wr - w2))
    assert torch.equal(q(w), expected)
    assert torch.allclose(conv.quantized_weight(), expected * q.alpha)
    # alpha scales the output, after the convolution of +-1 values (as the reference does)
    x = torch.randn(2, 16, 6, 6)
    signs = sign(x - x.mean((1, 2, 3), keepdim=True))
    assert torch.equal(conv(x), torch.nn.functional.conv2d(signs, expected, padding=1) * q.alpha.view(1, 8, 1, 1))


def test_theta_lock_zero_latent_gradient_at_init():
    torch.manual_seed(4)
    conv = rbnn_conv()
    conv.weight_quantizer.set_temperature(0.5)
    conv(torch.randn(2, 16, 6, 6)).square().sum().backward()
    assert torch.count_nonzero(conv.weight.grad) == 0  # 1 - |sin(float32(pi/2))| == 0 exactly
    assert 0 < conv.weight_quantizer.theta.grad.abs().max() < 1e-4  # cos(float32(pi/2)) ~ -4.4e-8
    assert conv.weight_quantizer.alpha.grad.abs().max() > 0
    # the documented alternative does not lock
    torch.manual_seed(4)
    unlocked = rbnn_conv(theta_init="uniform")
    assert torch.all((unlocked.weight_quantizer.theta >= 0) & (unlocked.weight_quantizer.theta <= math.pi / 2))
    unlocked(torch.randn(2, 16, 6, 6)).square().sum().backward()
    assert unlocked.weight.grad.abs().max() > 0


def rbnn_weight_formula(w, q):
    """The formula as plain autograd: W3 = W2 + |sin theta| (stopgrad(R1^T X R2) - W2)."""
    w2 = standardize(w)
    wr = (q.R1.t() @ w2.reshape(w.shape[0], q.a, q.b) @ q.R2).reshape_as(w2).detach()
    w3 = w2 + torch.sin(q.theta).abs() * (wr - w2)
    return sign_with_surrogate(w3, training_aware_grad, q.k, q.t)


@pytest.mark.parametrize("theta_init", ["half_pi", "uniform"])
def test_fused_weight_path_equals_the_formula(theta_init):
    torch.manual_seed(5)
    q = rbnn_conv(theta_init=theta_init).weight_quantizer.double()
    q.set_temperature(0.3)
    w = torch.randn(8, 16, 3, 3, dtype=torch.float64, requires_grad=True)
    g = torch.randn(8, 16, 3, 3, dtype=torch.float64)
    params = (w, q.theta)
    fused, formula = q(w), rbnn_weight_formula(w, q)
    assert torch.equal(fused, formula)
    for got, expected in zip(torch.autograd.grad(fused, params, g), torch.autograd.grad(formula, params, g)):
        assert torch.allclose(got, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("epoch, t", [(0, 0.01), (500, 0.316), (999, 9.93)])
def test_training_aware_surrogate_on_a_grid(epoch, t):
    """Weights: k max(0, sqrt2 t - t^2 |x|), k = max(1/t, 1); activations: k = 1, t = max(t, 1)."""
    t = log_linear_temperature(epoch, 1000, 1e-2, 1e1)
    q = RbnnWeight()
    q.set_temperature(t)
    k = max(1 / t, 1)
    assert q.k.item() == pytest.approx(k) and q.t.item() == pytest.approx(t)
    x = torch.linspace(-200, 200, 4001, dtype=torch.float64).requires_grad_()
    sign_with_surrogate(x, training_aware_grad, q.k.double(), q.t.double()).sum().backward()
    kq, tq = q.k.double().item(), q.t.double().item()  # the float32 buffers' values
    closed = kq * torch.clamp(math.sqrt(2) * tq - tq * tq * x.detach().abs(), min=0)
    assert torch.allclose(x.grad, closed, rtol=1e-9, atol=1e-12)
    assert x.grad[2000].item() == pytest.approx(k * math.sqrt(2) * t)  # 1.414 while t < 1
    support = x.detach()[x.grad > 0].abs().max().item()
    assert support == pytest.approx(math.sqrt(2) / t, rel=0.01, abs=0.1)
    a = RbnnInput()
    a.set_temperature(t)
    assert a.t.item() == pytest.approx(max(t, 1.0)) and a.k.item() == 1.0


def test_surrogate_is_the_derivative_of_the_papers_function():
    k, t = 2.0, 0.7
    x = torch.linspace(-3, 3, 601, dtype=torch.float64)
    inside = x.abs() < math.sqrt(2) / t
    f = torch.where(inside, k * (math.sqrt(2) * t * x - torch.sign(x) * t * t * x * x / 2), k * torch.sign(x))
    numeric = torch.gradient(f, spacing=(x,))[0]
    closed = training_aware_grad(x, torch.tensor(k, dtype=x.dtype), torch.tensor(t, dtype=x.dtype))
    assert torch.allclose(numeric[1:-1], closed[1:-1], atol=0.02)


def test_activation_forward_and_fused_backward():
    torch.manual_seed(6)
    x = (torch.randn(4, 3, 5, 5, dtype=torch.float64) * 2 + 1).requires_grad_()
    g = torch.randn(4, 3, 5, 5, dtype=torch.float64)
    q = RbnnInput().double()
    for t in (0.01, 0.5, 4.0):
        q.set_temperature(t)
        out = q(x)
        mean = x.detach().mean((1, 2, 3), keepdim=True)
        assert torch.equal(out, sign(x.detach() - mean))  # threshold = per-sample mean
        (fused,) = torch.autograd.grad(out, x, g)
        ref = sign_with_surrogate(standardize(x), training_aware_grad, q.k, q.t)
        (expected,) = torch.autograd.grad(ref, x, g)
        assert torch.allclose(fused, expected, atol=1e-12)
    a32 = RbnnInput(a32=True)
    assert a32.precision == 32 and q.precision == 1
    assert torch.allclose(a32(x.float()), standardize(x.float()))


needs_kernels = pytest.mark.skipif(not kernels.available(), reason=f"no compiled kernels: {kernels.unavailable_reason()}")


def standardized_sign_reference(x, g, q):
    """Autograd through standardize then the surrogate, in float64: (output, dL/dx)."""
    x64 = x.detach().double().requires_grad_()
    out = sign_with_surrogate(standardize(x64), training_aware_grad, q.k.double(), q.t.double())
    return out, torch.autograd.grad(out, x64, g.double())[0]


@needs_kernels
@pytest.mark.parametrize("channels_last", [False, True])
def test_compiled_activation_kernel_equals_the_formula(channels_last):
    """The compiled kernel of RbnnInput against the float64 formula, on every code path this CPU runs
    and on 1 and 2 threads, which all give the same bits; NCHW and channels-last, the gradient in
    either layout."""
    torch.manual_seed(8)
    x = torch.randn(5, 6, 7, 9) * 2 + 1  # 378 values per sample: whole blocks of 16 and a tail
    g = torch.randn(5, 6, 7, 9)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    q = RbnnInput()
    q.set_temperature(1.6)
    assert q.use_fused_kernel()
    expected_out, expected_dx = standardized_sign_reference(x, g, q)
    results = []
    try:
        for path in kernels.paths():
            kernels.set_path(path)
            for threads in (1, 2):
                torch.set_num_threads(threads)
                for grad in (g, g.contiguous(memory_format=torch.channels_last)):
                    out = q(x)
                    results.append((out, torch.autograd.grad(out, x, grad)[0]))
    finally:
        kernels.set_path("auto")
        torch.set_num_threads(1)
    out, dx = results[0]
    assert out.dtype == dx.dtype == torch.float32 and out.stride() == dx.stride() == x.stride()
    assert torch.equal(out, expected_out.float())
    assert torch.allclose(dx.double(), expected_dx, rtol=1e-4, atol=1e-6)
    for other_out, other_dx in results[1:]:
        assert torch.equal(other_out, out) and torch.equal(other_dx, dx)


@needs_kernels
def test_compiled_activation_kernel_takes_bfloat16_and_leaves_float64_to_torch():
    torch.manual_seed(9)
    x, g = torch.randn(3, 4, 5, 5), torch.randn(3, 4, 5, 5)
    q = RbnnInput()
    q.use_fused_kernel()
    x16 = x.bfloat16().requires_grad_()
    out = q(x16)
    (dx,) = torch.autograd.grad(out, x16, g.bfloat16())
    expected_out, expected_dx = standardized_sign_reference(x16, g.bfloat16(), q)
    assert out.dtype == dx.dtype == torch.bfloat16
    assert torch.equal(out.double(), expected_out) and torch.allclose(dx.double(), expected_dx, rtol=2e-2, atol=1e-3)
    x64 = x.double().requires_grad_()  # not a kernel dtype: the torch ops, to float64 precision
    (dx,) = torch.autograd.grad(q.double()(x64), x64, g.double())
    assert torch.allclose(dx, standardized_sign_reference(x64, g, q)[1], rtol=1e-12, atol=1e-12)


def test_activation_without_compiled_kernels_runs_the_torch_ops(monkeypatch):
    monkeypatch.setattr(kernels, "available", lambda: False)
    q = RbnnInput()
    assert not q.use_fused_kernel() and not q.fused
    torch.manual_seed(10)
    x, g = torch.randn(3, 4, 5, 5, requires_grad=True), torch.randn(3, 4, 5, 5)
    expected_out, expected_dx = standardized_sign_reference(x, g, q)
    out = q(x)
    assert torch.equal(out, expected_out.float())
    assert torch.allclose(torch.autograd.grad(out, x, g)[0].double(), expected_dx, rtol=1e-4, atol=1e-6)


def test_rotation_update_period_determinism_and_state_dict():
    torch.manual_seed(7)
    model = create_model("resnet20_1w1a", 10, method=get_method("rbnn").with_options(rotation_update=2))
    convs = [m for m in model.modules() if isinstance(getattr(m, "weight_quantizer", None), RbnnWeight)]
    assert len(convs) == 18 and all(c.weight_quantizer.rotation_update == 2 for c in convs)
    q = convs[0].weight_quantizer
    before = q.R1.clone()
    q.on_epoch_start(1, 10)  # 1 % 2 != 0: no update
    assert torch.equal(q.R1, before)
    q.on_epoch_start(2, 10)
    assert not torch.equal(q.R1, before)
    assert torch.allclose(q.R1 @ q.R1.t(), torch.eye(q.a), atol=1e-5)
    # the update only depends on the weights and the current rotations: deterministic
    x = standardize(convs[0].weight.detach()).reshape(-1, q.a, q.b)
    r1, r2 = bi_rotation(x, q.R1, q.R2)
    q.on_epoch_start(4, 10)
    assert torch.equal(q.R1, r1) and torch.equal(q.R2, r2)
    state = model.state_dict()
    name = next(n for n, m in model.named_modules() if m is q)
    assert {f"{name}.R1", f"{name}.R2", f"{name}.theta", f"{name}.alpha"} <= set(state)
    assert f"{name}.t" not in state  # set by the engine every epoch
    torch.manual_seed(8)
    fresh = create_model("resnet20_1w1a", 10, method="rbnn")
    fresh.load_state_dict(state)
    model.eval(), fresh.eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(model(x), fresh(x))


def test_same_seed_same_rotations():
    torch.manual_seed(9)
    a = create_model("resnet20_1w1a", 10, method="rbnn")
    torch.manual_seed(9)
    b = create_model("resnet20_1w1a", 10, method="rbnn")
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_shared_instance_is_refused():
    q = RbnnWeight()
    BinaryConv2d(4, 4, 3, padding=1, weight_quantizer=q)
    with pytest.raises(ValueError, match="single layer"):
        BinaryConv2d(4, 4, 3, padding=1, weight_quantizer=q)
    with pytest.raises(ValueError, match="rotation_update"):
        RbnnWeight(rotation_update=0)
