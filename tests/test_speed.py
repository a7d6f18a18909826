"""The fast training path: compiled quantizers against their formulas, exact resume with
torch.compile on, the bfloat16 fallback and the deferred loss check.

The rest of the suite runs with ``TORCH_COMPILE_DISABLE=1`` (conftest.py); these tests turn
compilation back on, on the smallest networks that exercise it.
"""
from __future__ import annotations

import os
import platform
import subprocess
import sys
import time

import pytest
import torch
import torch.nn.functional as F

from onebit.models import create_model
from onebit.quant import kernels
from onebit.quant.functional import ede_grad, sign_with_surrogate, standardize, training_aware_grad
from onebit.train.engine import Trainer
from onebit.train.precision import MixedPrecision, native_bfloat16
from onebit.train.speed import COMPILE_MIN_MACS, SpeedOptions, hardtanh_backward, use_float_hardtanh_backward
from test_quant_rbnn import needs_kernels, rbnn_conv, rbnn_weight_formula
from helpers import assert_same_weights
from test_train import ONEBIT, train_cmd

pytestmark = pytest.mark.usefixtures("one_thread")
COMPILE_ENV = {k: v for k, v in os.environ.items() if k != "TORCH_COMPILE_DISABLE"}


@pytest.fixture
def compile_on():
    with torch._dynamo.config.patch(disable=False):
        torch._dynamo.reset()
        yield
    torch._dynamo.reset()


def irnet_formula(conv, x):
    """IR-Net as plain autograd: EDE sign of x; EDE sign of standardize(W) times 2^round(log2 mean|W_std|)."""
    wq, aq = conv.weight_quantizer, conv.input_quantizer
    w = standardize(conv.weight)
    scale = 2.0 ** torch.round(torch.log2(w.detach().abs().mean((1, 2, 3), keepdim=True)))
    w = sign_with_surrogate(w, ede_grad, wq.k, wq.t) * scale
    return F.conv2d(sign_with_surrogate(x, ede_grad, aq.k, aq.t), w, padding=1)


def rbnn_formula(conv, x):
    """RBNN as plain autograd: the weight formula of test_quant_rbnn, per-sample standardised sign of x,
    the output times alpha."""
    aq, wq = conv.input_quantizer, conv.weight_quantizer
    a = sign_with_surrogate(standardize(x), training_aware_grad, aq.k, aq.t)
    return F.conv2d(a, rbnn_weight_formula(conv.weight, wq), padding=1) * wq.alpha.view(1, -1, 1, 1)


@pytest.mark.parametrize("method, formula", [("rbnn", rbnn_formula), ("irnet", irnet_formula)])
def test_compiled_binary_conv_equals_the_formulas(method, formula, compile_on):
    from onebit.layers import BinaryConv2d
    from onebit.quant import get_method

    torch.manual_seed(11)
    if method == "rbnn":
        conv = rbnn_conv(theta_init="uniform").double()  # uniform theta: no lock, every gradient flows
    else:
        m = get_method(method)
        conv = BinaryConv2d(16, 8, 3, padding=1, input_quantizer=m.input_quantizer,
                            weight_quantizer=m.weight_quantizer).double()
    x = torch.randn(4, 16, 6, 6, dtype=torch.float64, requires_grad=True)
    g = torch.randn(4, 8, 6, 6, dtype=torch.float64)
    params = [x, *conv.parameters()]
    compiled = torch.compile(conv, dynamic=False)
    for t in (0.7, 3.0):  # the engine sets t every epoch, after the compilation: no stale constant
        for q in (conv.input_quantizer, conv.weight_quantizer):
            q.set_temperature(t)
        got, expected = compiled(x), formula(conv, x)
        assert torch.allclose(got, expected, rtol=1e-12, atol=1e-12)
        for a, b in zip(torch.autograd.grad(got, params, g), torch.autograd.grad(expected, params, g)):
            assert torch.allclose(a, b, rtol=1e-9, atol=1e-12)


@needs_kernels
def test_compiled_kernel_stays_one_opaque_op_under_torch_compile(compile_on):
    """RbnnInput on its compiled kernel: torch.compile (one graph, no break) calls the same kernel, same bits."""
    torch.manual_seed(12)
    conv = rbnn_conv()
    assert conv.input_quantizer.use_fused_kernel()
    x = torch.randn(4, 16, 6, 6).contiguous(memory_format=torch.channels_last).requires_grad_()
    g = torch.randn(4, 8, 6, 6)
    quantizer = conv.input_quantizer
    compiled = torch.compile(quantizer, dynamic=False, fullgraph=True)
    got, expected = compiled(x), quantizer(x)
    assert torch.equal(got, expected)
    assert torch.equal(torch.autograd.grad(got, x, x)[0], torch.autograd.grad(expected, x, x)[0])
    got, expected = torch.compile(conv, dynamic=False)(x), conv(x)  # in a graph with the weight path
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-5)
    for a, b in zip(torch.autograd.grad(got, [x, *conv.parameters()], g),
                    torch.autograd.grad(expected, [x, *conv.parameters()], g)):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)


def test_float_hardtanh_backward_equals_aten(compile_on):
    x = torch.tensor([[-3.0, -1.0, -0.999, -0.5, 0.0, 0.5, 0.999, 1.0, 3.0]])
    g = torch.linspace(-2, 2, x.numel()).view_as(x)
    for low, high in ((-1.0, 1.0), (-0.5, 2.0)):
        assert torch.equal(hardtanh_backward(g, x, low, high), torch.ops.aten.hardtanh_backward(g, x, low, high))
    model = torch.nn.Sequential(torch.nn.Hardtanh())
    assert use_float_hardtanh_backward()  # the inductor tables of the pinned torch are there
    forward = torch.compile(model, dynamic=False)
    compiled, eager = x.clone().requires_grad_(), x.clone().requires_grad_()
    forward(compiled).backward(g)
    model(eager).backward(g)
    assert torch.equal(compiled.grad, eager.grad)


def test_compiled_kernels_on_the_default_path_only(monkeypatch):
    model = create_model("resnet20_1w1a", 10, method="rbnn")
    activations = [m for m in model.modules() if hasattr(m, "use_fused_kernel")]
    assert len(activations) == 18
    SpeedOptions({"eager": True}, torch.device("cpu")).prepare(model)
    assert not any(m.fused for m in activations)
    speed = SpeedOptions({"channels_last": True}, torch.device("cpu"))
    speed.prepare(model)
    assert all(m.fused for m in activations) == kernels.available() and speed.fused == 18 * kernels.available()
    assert ("18 quantizers on compiled CPU kernels" in speed.describe()) == kernels.available()
    monkeypatch.setattr(kernels, "available", lambda: False)
    monkeypatch.setattr(kernels, "unavailable_reason", lambda: "the training kernels are not built")
    speed = SpeedOptions({"channels_last": True}, torch.device("cpu"))
    speed.prepare(model)
    assert not any(m.fused for m in activations) and "compiled CPU kernels" not in speed.describe()
    assert "the training kernels are not built: the quantizers run their torch ops" in speed.notes


@pytest.mark.slow
def test_default_path_sigkill_then_resume_is_bit_identical(tmp_path):
    """The default path (torch.compile on; RBNN: its activations on the compiled kernels where they are
    built): a run killed after its first epoch and resumed ends with the weights of an uninterrupted
    one, bit for bit."""
    run = lambda *a, **k: subprocess.run(*a, check=True, capture_output=True, text=True, env=COMPILE_ENV, **k)  # noqa: E731
    options = ["--method", "rbnn", "--epochs", "2", "--compile"]
    run(train_cmd(tmp_path, *options, "--save", "full"))
    log = (tmp_path / "full" / "log.txt").read_text()
    assert "training path: torch.compile (--compile), channels-last" in log
    assert ("quantizers on compiled CPU kernels" in log) == kernels.available()
    proc = subprocess.Popen(train_cmd(tmp_path, *options, "--save", "killed"), env=COMPILE_ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = tmp_path / "killed" / "metrics.jsonl"
    deadline = time.time() + 300
    while not (metrics.exists() and metrics.read_text().strip()):
        assert proc.poll() is None and time.time() < deadline, "training ended before it could be killed"
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    assert len(metrics.read_text().splitlines()) < 2, "killed too late to test anything"
    run(ONEBIT + ["train", "--resume", str(tmp_path / "killed")])
    assert_same_weights(tmp_path / "full" / "checkpoint.pth", tmp_path / "killed" / "checkpoint.pth")


@pytest.mark.parametrize("flag, macs, compiles, why", [
    (None, COMPILE_MIN_MACS / 10, False, "would cost more than it saves"),
    (None, COMPILE_MIN_MACS, True, "compiling pays"),
    (True, 1.0, True, "(--compile)"),
    (False, 1e20, False, "(--no-compile)"),
])
def test_compilation_is_chosen_from_the_run_length_unless_forced(flag, macs, compiles, why, compile_on):
    speed = SpeedOptions({"compile": flag, "channels_last": True}, torch.device("cpu"))
    model = torch.nn.Linear(2, 2)
    forward = speed.training_forward(model, 4, training_macs=macs)
    assert speed.compile is compiles and (forward is not model) is compiles
    assert why in speed.describe() and speed.describe().startswith("training path: " + ("torch.compile" if compiles else "no"))


@pytest.mark.parametrize("requested", [True, None])
def test_amp_falls_back_to_float32_without_native_bfloat16(monkeypatch, requested):
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.setattr(torch.cpu, name, lambda: False)
    cpu = torch.device("cpu")
    assert not native_bfloat16(cpu)
    precision = MixedPrecision(requested, cpu)
    assert not precision.enabled and "no native bfloat16" in precision.describe()
    with precision.autocast():
        assert torch.ones(2, 2).matmul(torch.ones(2, 2)).dtype == torch.float32


@pytest.mark.parametrize("requested, eager, enabled", [
    (None, False, True),   # the default path: bfloat16 where native
    (None, True, False),   # --eager: float32
    (False, False, False),  # --no-amp
    (True, True, True),    # --eager --amp
])
def test_amp_is_on_by_default_where_bfloat16_is_native(monkeypatch, requested, eager, enabled):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    precision = MixedPrecision(requested, torch.device("cpu"), eager=eager)
    assert precision.enabled is enabled and not precision.fallback
    assert ("bfloat16" in precision.describe()) is enabled
    if enabled:
        assert ("--amp" in precision.describe()) is bool(requested)
        with precision.autocast():
            assert torch.ones(2, 2).matmul(torch.ones(2, 2)).dtype == torch.bfloat16


def test_a_non_finite_loss_is_caught_where_the_metrics_are_read():
    assert Trainer._read_sums(torch.tensor([6.0, 2.0], dtype=torch.float64), 4, 0, 1) == [6.0, 2.0, 4.0]
    # indices from 0 (epoch 2, step 7), named from 1 as the log counts them
    with pytest.raises(FloatingPointError, match=r"by epoch 3, batch 8: the training loss is nan"):
        Trainer._read_sums(torch.tensor([float("nan"), 2.0], dtype=torch.float64), 4, 2, 7)


CHURN = """
import ctypes, resource, torch
from onebit.train.speed import M_MMAP_THRESHOLD, M_TRIM_THRESHOLD, SpeedOptions
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def churn():  # a training step's pattern: activation-sized buffers allocated, freed, allocated again
    start = faults()
    for _ in range(5):
        buffers = [torch.ones(n << 20) for n in (4, 3, 2)]  # 36 MiB
        del buffers
    return faults() - start
mallopt = ctypes.CDLL(None).mallopt
mallopt(M_MMAP_THRESHOLD, 128 << 10), mallopt(M_TRIM_THRESHOLD, 128 << 10)  # glibc's initial values, held
churn()
plain = churn()
speed = SpeedOptions({}, torch.device("cpu"))
churn()
print(plain, churn(), speed.kept_memory, "freed CPU memory kept" in speed.describe())
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="keep_freed_cpu_memory sets glibc's malloc")
def test_default_path_reuses_freed_memory_instead_of_touching_new_pages():
    assert not SpeedOptions({"eager": True}, torch.device("cpu")).kept_memory
    out = subprocess.run([sys.executable, "-c", CHURN], capture_output=True, text=True, check=True).stdout.split()
    plain, kept = int(out[0]), int(out[1])
    assert out[2:] == ["True", "True"]
    assert plain > 5 * 4096 and kept < plain / 20, (plain, kept)  # 16 MiB = 4096 pages of 4 KiB
