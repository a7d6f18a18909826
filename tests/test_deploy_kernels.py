"""The compiled 1-bit convolution kernels against PyTorch's float convolution on +-1 tensors.

Every code path the CPU runs (``scalar`` always, ``avx2``, ``avx512`` and ``amx`` where the CPU has them),
on each of its layouts (channel words on ``scalar``, ``avx512`` and ``amx``, nibble planes on all), is tested on
the same fuzzed shapes: the integer dot products must be exactly those of ``F.conv2d``. Paths the CPU
lacks are skipped with the reason in pytest's summary.
"""
import ctypes
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from onebit.deploy import kernels
from onebit.deploy.bitconv import BinaryConvKernel, kernel_weights, pack_signs, unpack_signs

PATHS = kernels.available_kernels()
NEEDS = {"avx2": "AVX2 + FMA + BMI2", "avx512": "AVX-512 F/BW/VL + VPOPCNTDQ",
         "amx": "AVX-512 VPOPCNTDQ + AMX-INT8 with the OS permission to use the tiles"}
# (avx512 and amx on nibble planes run the avx2 code; it is tested where a word layer feeds a nibble one)
LAYOUTS = [("scalar", "words"), ("scalar", "nibbles"), ("avx2", "nibbles"), ("avx512", "words"), ("amx", "words")]


def use_path(name: str, layout: str, monkeypatch) -> None:
    """Run on code path ``name`` with the layout ``layout`` (skipped if this CPU lacks the path)."""
    if name not in PATHS:
        pytest.skip(f"this CPU has no {NEEDS[name]}: the {name} path is not tested here")
    kernels.set_kernel(name)
    monkeypatch.setattr(BinaryConvKernel, "allow_words", layout == "words")


@pytest.fixture(params=LAYOUTS, ids="-".join)
def kernel(request, monkeypatch):
    use_path(*request.param, monkeypatch)
    yield request.param[0]
    kernels.set_kernel("auto")


def signs(x, threshold=0.0):
    return torch.where(x >= threshold, 1.0, -1.0)


def reference_conv(x_pm, w_pm, stride, padding, groups, zero_padding):
    """The trained layer's forward: pad the +-1 input with 0 (papers) or +1, then convolve."""
    if not zero_padding and any(padding):
        x_pm = F.pad(x_pm, (padding[1], padding[1], padding[0], padding[0]), value=1.0)
        padding = (0, 0)
    return F.conv2d(x_pm, w_pm, None, stride, padding, 1, groups)


def random_case(rng):
    groups = int(rng.choice([1, 1, 1, 2, 3, 0]))  # 0: depthwise
    cg = int(rng.integers(1, 150)) if groups else 1
    cog = int(rng.integers(1, 40)) if groups else int(rng.choice([1, 2]))
    groups = groups or int(rng.integers(2, 20))
    k = int(rng.choice([1, 3]))
    stride = int(rng.choice([1, 2]))
    pad = int(rng.choice([0, 1, 1, 1, 2, 3])) if k == 3 else int(rng.choice([0, 0, 0, 1]))
    h, w = (int(v) for v in rng.integers(k, 19, size=2))
    return dict(n=int(rng.integers(1, 4)), cin=cg * groups, cout=cog * groups, k=k, stride=stride, pad=pad,
                groups=groups, h=h, w=w, zero_padding=bool(rng.integers(0, 2)))


@pytest.mark.parametrize("seed", range(6))
def test_fuzzed_convolutions_are_exact(kernel, seed):
    rng = np.random.default_rng(seed)
    for _ in range(12):
        c = random_case(rng)
        x = torch.from_numpy(rng.standard_normal((c["n"], c["cin"], c["h"], c["w"])).astype(np.float32))
        w = torch.from_numpy(rng.standard_normal((c["cout"], c["cin"] // c["groups"], c["k"], c["k"])).astype(np.float32))
        t = torch.from_numpy(rng.standard_normal(c["cin"]).astype(np.float32)) * 0.3
        stride, padding = (c["stride"],) * 2, (c["pad"],) * 2
        expected = reference_conv(signs(x, t[None, :, None, None]), signs(w), stride, padding, c["groups"], c["zero_padding"])
        conv = BinaryConvKernel((w < 0).numpy(), stride=stride, padding=padding, groups=c["groups"],
                                zero_padding=c["zero_padding"])
        got = conv.run(conv.binarize(x, t), torch.ones(c["cout"]), torch.zeros(c["cout"]))
        assert torch.equal(got, expected), c


def test_resnet_shapes_and_channel_tails(kernel):
    """Channel counts around multiples of 4/64 and all tile widths (partial position tiles)."""
    for cin, cout, side in [(64, 64, 14), (63, 65, 7), (65, 12, 9), (128, 7, 5), (4, 13, 23)]:
        x = torch.randn(2, cin, side, side)
        w = torch.randn(cout, cin, 3, 3)
        conv = BinaryConvKernel((w < 0).numpy(), stride=(1, 1), padding=(1, 1), zero_padding=True)
        got = conv.run(conv.binarize(x), torch.ones(cout), torch.zeros(cout))
        assert torch.equal(got, F.conv2d(signs(x), signs(w), padding=1))


@pytest.mark.parametrize("cin, cout, side, groups, bits", [
    (200, 40, 5, 1, False),   # 36 word rows (4 passes of the AMX GEMM), 3 channel tiles (one alone), 32-position tiles
    (128, 17, 12, 1, False),  # 18 word rows, one channel past a tile of 16
    (260, 66, 9, 2, False),   # groups: 130 input channels (3 words, 2 channels in the last) and 33 outputs per group
    (65, 130, 10, 1, True),   # 130 outputs as the next layer's words: 3 spans of 64, the last of 2 channels
])
def test_word_gemm_shapes(kernel, cin, cout, side, groups, bits):
    """Word rows not a multiple of the AMX GEMM's pass, partial tiles of positions and channels."""
    torch.manual_seed(cin + cout)
    x, w = torch.randn(2, cin, side, side + 1), torch.randn(cout, cin // groups, 3, 3)
    conv = BinaryConvKernel((w < 0).numpy(), padding=(1, 1), groups=groups, zero_padding=True)
    planes = conv.binarize(x)
    if kernel == "amx":  # these shapes run on the AMX GEMM, not on the word tile
        assert kernels.library().ob_conv_amx(ctypes.byref(planes.shape)) == 1
    expected = F.conv2d(signs(x), signs(w), padding=1, groups=groups)
    if not bits:
        for threads in (1, 2):
            assert torch.equal(conv.run(planes, torch.ones(cout), torch.zeros(cout), threads=threads), expected), threads
        return
    second = BinaryConvKernel(np.ones((8, cout, 1, 1), dtype=bool))  # all -1: its output is -(sum of its input)
    thresh, flip = torch.zeros(cout, dtype=torch.int32), torch.zeros(cout, dtype=torch.uint8)
    hidden = conv.run(planes, None, None, float_out=False, bits_for=second, thresh=thresh, flip=flip)
    got = second.run(hidden, torch.ones(8), torch.zeros(8))
    assert torch.equal(got, -torch.where(expected < 0, -1.0, 1.0).sum(1, keepdim=True).expand(2, 8, side, side + 1))


def test_amx_rule_leaves_short_strided_and_large_convolutions_to_the_word_tile():
    """The amx path runs stride-1 convolutions of 18+ word rows whose weights take at most 1 MB as bytes."""
    if "amx" not in PATHS:
        pytest.skip(f"this CPU has no {NEEDS['amx']}: the amx path is not tested here")

    def on_amx(c, side, stride=1):
        conv = BinaryConvKernel(np.zeros((c, c, 3, 3), dtype=bool), stride=(stride, stride), padding=(1, 1))
        return kernels.library().ob_conv_amx(ctypes.byref(conv.layout(1, side, side).shape)) == 1

    try:
        kernels.set_kernel("amx")
        assert on_amx(128, 28) and on_amx(256, 14)  # 18 and 36 word rows, 147 KB and 590 KB of byte weights
        assert not on_amx(64, 56) and not on_amx(128, 28, stride=2) and not on_amx(512, 7)  # 9 rows, strided, 2.4 MB
        kernels.set_kernel("avx512")
        assert not on_amx(256, 14)
    finally:
        kernels.set_kernel("auto")


def test_output_transform_scale_bias_residual(kernel):
    x, w = torch.randn(2, 20, 9, 9), torch.randn(10, 20, 3, 3)
    mult, bias, residual = torch.randn(10), torch.randn(10), torch.randn(2, 10, 5, 5)
    conv = BinaryConvKernel((w < 0).numpy(), stride=(2, 2), padding=(1, 1), zero_padding=True)
    got = conv.run(conv.binarize(x), mult, bias, residual=residual)
    dots = F.conv2d(signs(x), signs(w), stride=2, padding=1).double()
    # fma(dot, mult, bias) rounded once to float32, then + residual
    fused = (dots * mult.double()[None, :, None, None] + bias.double()[None, :, None, None]).float()
    assert torch.equal(got, fused + residual)


def test_output_can_overwrite_its_residual(kernel):
    """The runtime writes a layer's output over its residual: every element must read its residual
    before anything overwrites it (overlapping vector tails, masked short rows, padded edge columns)."""
    for side, stride in [(28, 1), (14, 1), (5, 1), (19, 2)]:
        x, w = torch.randn(1, 16, side, side), torch.randn(24, 16, 3, 3)
        conv = BinaryConvKernel((w < 0).numpy(), stride=(stride, stride), padding=(1, 1), zero_padding=True)
        planes, mult, bias = conv.binarize(x), torch.randn(24), torch.randn(24)
        residual = torch.randn(1, 24, (side - 1) // stride + 1, (side - 1) // stride + 1)
        expected = conv.run(planes, mult, bias, residual=residual)
        got = conv.run(planes, mult, bias, residual=residual, out=residual)
        assert got is residual and torch.equal(got, expected), (side, stride)


@pytest.mark.parametrize("consumer_stride", [1, 2])
def test_bit_packed_output_feeds_the_next_conv(kernel, consumer_stride):
    """LCE's trick: the first conv writes the second's input bits through integer thresholds."""
    torch.manual_seed(consumer_stride)
    x = torch.randn(2, 24, 10, 11)
    w1, w2 = torch.randn(36, 24, 3, 3), torch.randn(20, 36, 3, 3)
    first = BinaryConvKernel((w1 < 0).numpy(), stride=(1, 1), padding=(1, 1), zero_padding=True)
    second = BinaryConvKernel((w2 < 0).numpy(), stride=(consumer_stride,) * 2, padding=(1, 1), zero_padding=True)
    thresh = torch.randint(-30, 30, (36,), dtype=torch.int32)
    flip = torch.randint(0, 2, (36,), dtype=torch.uint8)
    planes = first.run(first.binarize(x), None, None, float_out=False, bits_for=second, thresh=thresh, flip=flip)
    got = second.run(planes, torch.ones(20), torch.zeros(20))
    dots = F.conv2d(signs(x), signs(w1), padding=1)
    negative = (dots < thresh[None, :, None, None].float()) != flip[None, :, None, None].bool()
    hidden = torch.where(negative, -1.0, 1.0)
    assert torch.equal(got, F.conv2d(hidden, signs(w2), stride=consumer_stride, padding=1))


def test_threads_give_the_same_result(kernel):
    x, w = torch.randn(2, 40, 21, 17), torch.randn(50, 40, 3, 3)
    conv = BinaryConvKernel((w < 0).numpy(), stride=(2, 2), padding=(1, 1), zero_padding=True)
    mult, bias = torch.randn(50), torch.randn(50)
    one = conv.run(conv.binarize(x, threads=1), mult, bias, threads=1)
    two = conv.run(conv.binarize(x, threads=2), mult, bias, threads=2)
    assert torch.equal(one, two)


def test_paths_agree_bit_for_bit(monkeypatch):
    """All code paths and layouts give the same floats (same output transform, no fma in one path only)."""
    x, w = torch.randn(3, 70, 12, 12), torch.randn(33, 70, 3, 3)
    mult, bias = torch.randn(33), torch.randn(33)
    results = []
    try:
        for name, layout in LAYOUTS:
            if name in PATHS:
                use_path(name, layout, monkeypatch)
                conv = BinaryConvKernel((w < 0).numpy(), stride=(1, 1), padding=(1, 1), zero_padding=True)
                assert conv.layout(3, 12, 12).shape.words == (layout == "words")
                results.append(conv.run(conv.binarize(x), mult, bias))
    finally:
        kernels.set_kernel("auto")
    assert len(results) >= 2 and all(torch.equal(r, results[0]) for r in results[1:])


@pytest.mark.parametrize("cout", [64, 128, 40])
def test_channel_words_feed_nibbles_and_words(kernel, cout):
    """Bit-packed output between layers of either layout: a word-layout producer writes whole words
    (a 64-channel task) or whole nibbles; 40 channels: one partial word."""
    torch.manual_seed(cout)
    x = torch.randn(1, 70, 9, 8)
    w1, w2 = torch.randn(cout, 70, 3, 3), torch.randn(16, cout, 3, 3)
    first = BinaryConvKernel((w1 < 0).numpy(), stride=(1, 1), padding=(1, 1), zero_padding=True)
    dots = F.conv2d(signs(x), signs(w1), padding=1)
    thresh = torch.randint(-20, 20, (cout,), dtype=torch.int32)
    flip = torch.randint(0, 2, (cout,), dtype=torch.uint8)
    hidden = torch.where((dots < thresh[None, :, None, None].float()) != flip[None, :, None, None].bool(), -1.0, 1.0)
    for consumer_words in (True, False):  # nibbles: on the avx512 path, avx2 code reading bits from the word tile
        second = BinaryConvKernel((w2 < 0).numpy(), stride=(2, 2), padding=(1, 1), zero_padding=True)
        second.allow_words = consumer_words and first.allow_words
        planes = first.run(first.binarize(x), None, None, float_out=False, bits_for=second, thresh=thresh, flip=flip)
        got = second.run(planes, torch.ones(16), torch.zeros(16))
        assert torch.equal(got, F.conv2d(hidden, signs(w2), stride=2, padding=1)), consumer_words


TRANSFORM_CASES = [  # (cin, cout, side, kernel, stride, pad, zero padding): row pieces, tails, padding classes
    (70, 64, 14, 3, 1, 1, True), (64, 128, 9, 3, 1, 1, True), (20, 40, 7, 3, 2, 1, True), (64, 64, 3, 3, 1, 2, True),
    (33, 70, 5, 1, 1, 0, False), (16, 64, 11, 3, 1, 1, False), (8, 64, 8, 5, 1, 2, True),  # 25 padding classes
    (16, 64, 20, 3, 1, 1, True), (24, 48, 33, 3, 2, 1, False),  # rows of 16+ (float output alone too)
]


@pytest.mark.parametrize("layout", ["words", "nibbles"])
def test_output_transform_paths_agree(monkeypatch, layout):
    """Every output the transform writes, on this CPU's best path against the portable one, bit for bit:
    float output with a scale, written over its residual, with the next layer's bits from the float
    output; bits only, from integer thresholds (a consumer in channel words where the producer has them)."""
    best = PATHS[-1]
    if best == "scalar":
        pytest.skip("this CPU runs only the scalar path")
    if best == "avx2" and layout == "words":
        pytest.skip("the avx2 path has no channel words")
    gen = torch.Generator().manual_seed(7)
    try:
        for cin, cout, side, k, stride, pad, zero in TRANSFORM_CASES:
            x, w = torch.randn(2, cin, side, side, generator=gen), torch.randn(cout, cin, k, k, generator=gen)
            w2 = torch.randn(16, cout, 3, 3, generator=gen)
            pre, mult, bias = torch.rand(cout, generator=gen) + 0.5, torch.randn(cout, generator=gen), torch.randn(cout, generator=gen)
            ho = (side + 2 * pad - k) // stride + 1
            residual = torch.randn(2, cout, ho, ho, generator=gen)
            thresh = torch.randint(-20, 20, (cout,), dtype=torch.int32, generator=gen)
            flip = torch.randint(0, 2, (cout,), dtype=torch.uint8, generator=gen)
            float_thresh = torch.randn(cout, generator=gen) * 0.3
            results = []
            for name in ("scalar", best):
                use_path(name, layout, monkeypatch)
                conv = BinaryConvKernel((w < 0).numpy(), stride=(stride,) * 2, padding=(pad,) * 2, zero_padding=zero)
                second = BinaryConvKernel((w2 < 0).numpy(), padding=(1, 1))
                planes = conv.binarize(x)
                out = residual.clone()
                floats, bits = conv.run(planes, mult, bias, residual=out, out=out, pre=pre, bits_for=second,
                                        float_thresh=float_thresh)
                assert floats is out
                from_floats = second.run(bits, torch.ones(16), torch.zeros(16))
                bits = conv.run(planes, None, None, float_out=False, bits_for=second, thresh=thresh, flip=flip)
                results.append((floats, from_floats, second.run(bits, torch.ones(16), torch.zeros(16)),
                                conv.run(planes, mult, bias)))
            for a, b in zip(*results):
                assert torch.equal(a, b), (cin, cout, side, k, stride, pad, zero)
            dots = F.conv2d(signs(x), signs(w), stride=stride, padding=pad) if zero else None
            if dots is not None:  # and the float output is the formula's
                fused = ((dots.double() * pre.double()[None, :, None, None]).float().double() * mult.double()[None, :, None, None]
                         + bias.double()[None, :, None, None]).float()
                assert torch.equal(results[1][0], fused + residual)
    finally:
        kernels.set_kernel("auto")


def test_task_transform_can_be_switched_off():
    """The benchmark's before/after switch: the per-channel loops give the same floats and bits."""
    x, w, w2 = torch.randn(1, 64, 20, 20), torch.randn(64, 64, 3, 3), torch.randn(8, 64, 3, 3)
    conv = BinaryConvKernel((w < 0).numpy(), padding=(1, 1))
    second = BinaryConvKernel((w2 < 0).numpy(), padding=(1, 1))
    mult, bias, float_thresh = torch.randn(64), torch.randn(64), torch.randn(64) * 0.3
    results = []
    try:
        for on in (False, True):
            assert kernels.use_task_transform(on) is True  # the previous setting: on by default
            floats, bits = conv.run(conv.binarize(x), mult, bias, bits_for=second, float_thresh=float_thresh)
            results.append((floats, second.run(bits, torch.ones(8), torch.zeros(8))))
            kernels.use_task_transform(True)
    finally:
        kernels.use_task_transform(True)
    assert all(torch.equal(a, b) for a, b in zip(*results))


def test_channel_words_need_whole_words_per_task():
    if not kernels.kernel_has_words():
        pytest.skip(f"the {kernels.get_kernel()} path has no channel words")
    first = BinaryConvKernel(np.zeros((32, 8, 3, 3), dtype=bool), padding=(1, 1), groups=2)  # 16 outputs per group
    second = BinaryConvKernel(np.zeros((8, 32, 1, 1), dtype=bool))
    planes = first.binarize(torch.randn(1, 16, 5, 5))
    with pytest.raises(ValueError, match="whole words"):
        first.run(planes, None, None, float_out=False, bits_for=second, thresh=torch.zeros(32, dtype=torch.int32),
                  flip=torch.zeros(32, dtype=torch.uint8))


@pytest.mark.parametrize("cg", [1, 3, 63, 64, 65, 200])
def test_sign_packing_round_trip(cg):
    negative = np.random.default_rng(cg).random((5, cg, 3, 3)) < 0.5
    words = pack_signs(negative)
    assert words.dtype == np.uint64 and words.shape == (5, 3, 3, -(-cg // 64))
    assert np.array_equal(unpack_signs(words, cg), negative)
    # channel c of tap (0, 0) is bit c % 64 of word c // 64; bit 1 = -1
    assert int(words[0, 0, 0, 0]) & 1 == int(negative[0, 0, 0, 0])


def test_kernel_weight_layout():
    negative = np.zeros((7, 5, 1, 1), dtype=bool)
    negative[6, 4, 0, 0] = True  # output 6 (block 1, row 0), channel 4 (nibble 1, bit 0)
    layout = kernel_weights(negative, groups=1)
    assert layout.shape == (1, 2, 2, 6)
    assert layout[0, 1, 1, 0] == 1 << 4 and layout.sum() == 1 << 4
    negative = np.zeros((9, 70, 3, 3), dtype=bool)
    negative[8, 66, 1, 2] = True  # output 8 (block 1, row 0), channel 66 (word 1, bit 2), tap 5
    words = kernel_weights(negative, groups=1, words=True)
    assert words.dtype == np.uint64 and words.shape == (1, 2, 18, 8)
    assert words[0, 1, 9 + 5, 0] == 1 << 2 and int(words.sum()) == 1 << 2


def test_kernel_choice_and_errors():
    assert "scalar" in PATHS
    with pytest.raises(ValueError, match="unknown kernel"):
        kernels.set_kernel("sse9")
    env = dict(os.environ, ONEBIT_KERNEL="scalar")
    out = subprocess.run([sys.executable, "-c", "from onebit.deploy import get_kernel; print(get_kernel())"],
                         env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "scalar"
    # the best path the CPU runs is the default (amx is opt-in); a path it lacks is refused with a clear error
    assert kernels.get_kernel() == [p for p in PATHS if p != "amx"][-1]
    if "avx512" in PATHS:
        kernels.set_kernel("avx512")
        kernels.set_kernel("auto")
    else:
        with pytest.raises(ValueError, match="not supported by this CPU"):
            kernels.set_kernel("avx512")


def test_missing_extension_gives_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(kernels, "_HERE", tmp_path)
    monkeypatch.setattr(kernels, "_lib", None)
    with pytest.raises(kernels.KernelsUnavailable, match="pip install"):
        kernels.get_kernel()


def test_package_imports_without_loading_the_kernels():
    code = ("import onebit, onebit.deploy, onebit.deploy.kernels as k; import onebit.cli; "
            "print(k._lib is None)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


@pytest.mark.parametrize("args", [
    ((1, 64, 28, 28), 3, 2, 1, False, True, None), ((2, 3, 7, 9), 2, 2, 0, True, False, None),
    ((2, 3, 7, 9), 3, 2, 1, True, True, None), ((1, 2, 5, 5), (3, 2), (2, 1), (1, 0), True, True, None),
    ((1, 2, 6, 6), 3, 2, 1, False, True, 5), ((2, 4, 13, 11), 3, 3, 1, True, False, None),
    ((1, 8, 10, 13), 2, 2, 0, False, True, None), ((1, 3, 6, 4), 2, 2, 0, False, True, 3),
])
def test_pooling_matches_pytorch_bit_for_bit(kernel, args):
    from onebit.deploy.pooling import avg_pool2d, max_pool2d

    shape, k, s, p, ceil_mode, count_pad, divisor = args
    x = torch.randn(*shape) * 10
    x[0, 0, 0, 0] = float("-inf")
    assert torch.equal(avg_pool2d(x, k, s, p, ceil_mode, count_pad, divisor),
                       F.avg_pool2d(x, k, s, p, ceil_mode, count_pad, divisor))
    if not ceil_mode:
        assert torch.equal(max_pool2d(x, k, s, p), F.max_pool2d(x, k, s, p))
        nhwc = max_pool2d(x.contiguous(memory_format=torch.channels_last), k, s, p)  # NHWC in, NCHW out
        assert nhwc.is_contiguous() and torch.equal(nhwc, F.max_pool2d(x, k, s, p))
    x[0, 1, 2, 2] = float("nan")  # NaN propagates as in PyTorch
    assert torch.equal(max_pool2d(x, 3, 2, 1).isnan(), F.max_pool2d(x, 3, 2, 1).isnan())
    nhwc = max_pool2d(x.contiguous(memory_format=torch.channels_last), 3, 2, 1)
    assert torch.equal(nhwc.isnan(), F.max_pool2d(x, 3, 2, 1).isnan())
