"""The kernels' float convolutions (onebit.deploy.floatconv): their arithmetic against its formula, and
PyTorch's results wherever the runtime uses them."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from onebit.deploy import floatconv, kernels
from onebit.deploy.ops import batch_norm_affine

HAS_AVX512 = "avx512" in kernels.available_kernels()
needs_avx512 = pytest.mark.skipif(not HAS_AVX512, reason="this CPU has no AVX-512 F/BW/VL + VPOPCNTDQ: the avx512 "
                                                          "float convolution is not tested here")

# (input shape, weight shape, stride, padding, batch norm, max pool (kernel, stride, padding))
CASES = [
    ((2, 3, 30, 27), (32, 3, 7, 7), 2, 3, True, (3, 2, 1)),  # a ResNet stem
    ((1, 5, 9, 11), (16, 5, 3, 3), 1, 1, False, None),
    ((2, 40, 7, 7), (48, 40, 1, 1), 1, 0, True, None),  # a shortcut: 49 positions, vector tails
    ((1, 20, 5, 70), (80, 20, 1, 1), 1, 0, False, None),  # 350 positions, channel tails
    ((1, 128, 14, 14), (256, 128, 1, 1), 1, 0, True, None),  # Bi-Real-18's second shortcut (oneDNN: 80 + 48 on 2 threads)
]


def fma_chain(x, w, stride, padding, affine, reduce_block=0):
    """Each output: fma over the taps in (ky, kx, c) order from 0 (with ``reduce_block``: one such chain per block
    of that many input channels, each added to the sum of the blocks before it), then fma(v, alpha, beta),
    emulated in float64 (products of two float32 are exact there; each sum rounded to float32)."""
    xp = np.pad(x.numpy(), ((0, 0), (0, 0), (padding, padding), (padding, padding))).astype(np.float64)
    cout, c, kh, kw = w.shape
    ho, wo = (xp.shape[2] - kh) // stride + 1, (xp.shape[3] - kw) // stride + 1
    total = None
    for c0 in range(0, c, reduce_block or c):
        acc = np.zeros((x.shape[0], cout, ho, wo), np.float32)
        for ky in range(kh):
            for kx in range(kw):
                for ci in range(c0, min(c0 + (reduce_block or c), c)):
                    tap = xp[:, ci, ky:ky + stride * (ho - 1) + 1:stride, kx:kx + stride * (wo - 1) + 1:stride]
                    acc = (acc + w[:, ci, ky, kx].double().numpy()[None, :, None, None] * tap[:, None]).astype(np.float32)
        total = acc if total is None else total + acc  # float32 + float32: one rounding
    acc = total
    if affine is not None:
        a, b = (affine[i].double().numpy()[None, :, None, None] for i in range(2))
        acc = (acc * a + b).astype(np.float32)
    return torch.from_numpy(acc)


def reference(weight, stride, padding, affine, pool):
    def run(v):
        y = F.conv2d(v, weight, None, stride, padding)
        y = batch_norm_affine(y, affine) if affine is not None else y
        return F.max_pool2d(y, *pool) if pool else y
    return run


@needs_avx512
@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c[1])))
def test_avx512_float_conv_is_its_formula(case, monkeypatch):
    shape, wshape, stride, padding, bn, pool = case
    g = torch.Generator().manual_seed(sum(wshape))
    x, w = torch.randn(shape, generator=g), torch.randn(wshape, generator=g) * 0.3
    affine = torch.randn(2, wshape[0], generator=g) if bn else None
    kernels.set_kernel("avx512")
    try:
        got = floatconv._run(x, w, floatconv._case(x, w, None, stride, padding, 1, 1, pool), affine)
    finally:
        kernels.set_kernel("auto")
    expected = fma_chain(x, w, stride, padding, affine)
    assert torch.equal(got, F.max_pool2d(expected, *pool) if pool else expected)


@needs_avx512
@pytest.mark.parametrize("reduce_block", [16, 32])
def test_avx512_1x1_conv_in_reduce_blocks_is_its_formula(reduce_block):
    """40 input channels in blocks of 16 (16 + 16 + 8) or 32 (32 + 8), each block's chain added to the sum before."""
    g = torch.Generator().manual_seed(reduce_block)
    x, w, affine = torch.randn(2, 40, 7, 9, generator=g), torch.randn(48, 40, 1, 1, generator=g), torch.randn(2, 48, generator=g)
    kernels.set_kernel("avx512")
    try:
        got = floatconv._run(x, w, floatconv._case(x, w, None, 1, 0, 1, 1, None), affine, reduce_block)
    finally:
        kernels.set_kernel("auto")
    assert torch.equal(got, fma_chain(x, w, 1, 0, affine, reduce_block))
    assert not torch.equal(got, fma_chain(x, w, 1, 0, affine))  # the blocks do round otherwise


@pytest.mark.parametrize("case", CASES[:1] + CASES[2:3] + CASES[4:], ids=["stem", "shortcut", "shortcut128"])
@pytest.mark.parametrize("threads", [1, 2])
def test_float_convs_give_pytorchs_results(case, threads):
    """On every path and thread count: PyTorch's results (the kernels where the check found them equal)."""
    shape, wshape, stride, padding, bn, pool = case
    g = torch.Generator().manual_seed(1)
    x, w = torch.randn(shape, generator=g), torch.randn(wshape, generator=g) * 0.3
    affine = torch.randn(2, wshape[0], generator=g) if bn else None
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for path in kernels.available_kernels():
            kernels.set_kernel(path)
            got = floatconv.conv2d(x, w, None, stride, padding, 1, 1, affine, pool,
                                   reference=reference(w, stride, padding, affine, pool))
            assert torch.equal(got, reference(w, stride, padding, affine, pool)(x)), path
    finally:
        kernels.set_kernel("auto")
        torch.set_num_threads(previous)


def test_float_conv_falls_back_where_the_sums_differ():
    """A case whose reference rounds otherwise (here: summed in float64) is left to the reference."""
    g = torch.Generator().manual_seed(2)
    x, w = torch.randn(1, 64, 6, 6, generator=g), torch.randn(32, 64, 1, 1, generator=g)

    def other(v):
        return F.conv2d(v.double(), w.double()).float()

    assert torch.equal(floatconv.conv2d(x, w, reference=other), other(x))
    key = next(k for k in floatconv._EXACT.answers if k[:2] == ((1, 64, 6, 6), (32, 64, 1, 1)))
    assert floatconv._EXACT.answers[key] is None
    # and the kernels do not cover grouped, biased, dilated or non-float32 convolutions
    assert floatconv._case(x, w, torch.zeros(32), 1, 0, 1, 1, None) is None
    assert floatconv._case(x, w, None, 1, 0, 2, 1, None) is None
    assert floatconv._case(x.double(), w, None, 1, 0, 1, 1, None) is None


def test_exactness_check_asks_once_per_case_and_forgets_past_its_limit():
    from onebit.deploy.exactness import ExactnessCheck
    check, calls = ExactnessCheck(limit=2), []

    def fast(v):
        calls.append(v.shape)
        return v * 1.0

    assert check("same", (3, 4), fast, lambda v: v) is True
    assert check("same", (3, 4), fast, lambda v: v) is True and calls == [(3, 4)]  # remembered
    assert check("off", (2,), fast, lambda v: v + 1e-3) is False
    assert check("none", (2,), lambda v: None, lambda v: v) is False  # no fast result: not exact
    assert list(check.answers) == ["none"]  # the limit of 2 answers was reached: started over


def avg_pool_formula(x):
    """2x2/2 average pool (floor) as PyTorch sums it: ((((0 + x00) + x01) + x10) + x11) / 4, in float32."""
    v = x.numpy()[:, :, : x.shape[2] // 2 * 2, : x.shape[3] // 2 * 2]
    s = np.float32(0) + v[:, :, 0::2, 0::2]
    for part in (v[:, :, 0::2, 1::2], v[:, :, 1::2, 0::2], v[:, :, 1::2, 1::2]):
        s = s + part
    return torch.from_numpy(s / np.float32(4))


AVG_CASES = [  # (input shape, output channels, avg_pool2d arguments after the input)
    ((2, 40, 10, 14), 48, (2, 2, 0, True, False, None)),  # a Bi-Real shortcut's pool: 35 positions
    ((1, 20, 11, 13), 32, (2, None, 0, False, True, None)),  # odd sides: the last row and column dropped
]


@needs_avx512
@pytest.mark.parametrize("case", AVG_CASES, ids=["even", "odd"])
def test_avx512_avg_pool_1x1_conv_is_its_formula(case):
    shape, cout, pool = case
    g = torch.Generator().manual_seed(cout)
    x, w, affine = torch.randn(shape, generator=g), torch.randn(cout, shape[1], 1, 1, generator=g), torch.randn(2, cout, generator=g)
    kernels.set_kernel("avx512")
    try:
        got = floatconv._run(x, w, floatconv._case(x, w, None, 1, 0, 1, 1, None, pool), affine)
    finally:
        kernels.set_kernel("auto")
    assert torch.equal(got, fma_chain(avg_pool_formula(x), w, 1, 0, affine))


@pytest.mark.parametrize("case", AVG_CASES, ids=["even", "odd"])
@pytest.mark.parametrize("threads", [1, 2])
def test_avg_pool_1x1_convs_give_pytorchs_results(case, threads):
    shape, cout, pool = case
    g = torch.Generator().manual_seed(3)
    x, w, affine = torch.randn(shape, generator=g), torch.randn(cout, shape[1], 1, 1, generator=g), torch.randn(2, cout, generator=g)

    def reference(v):
        return batch_norm_affine(F.conv2d(F.avg_pool2d(v, *pool), w), affine)

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for path in kernels.available_kernels():
            kernels.set_kernel(path)
            assert torch.equal(floatconv.conv2d(x, w, affine=affine, avg_pool=pool, reference=reference), reference(x)), path
    finally:
        kernels.set_kernel("auto")
        torch.set_num_threads(previous)
    # pools the kernels do not cover: padding, a divisor, ceil mode on odd sides
    for other in ((2, 2, 1), (2, 2, 0, False, True, 3), (3,)):
        assert floatconv._case(x, w, None, 1, 0, 1, 1, None, other) is None
    assert floatconv._case(x[..., :-1], w, None, 1, 0, 1, 1, None, (2, 2, 0, True)) is None
