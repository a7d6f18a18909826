"""Float convolutions (with an eval BatchNorm and a max pool after them) on the compiled kernels, with
PyTorch's results bit for bit.

PyTorch's x86 CPU convolution (oneDNN) computes each output as one chain of fused multiply-adds over its
taps in (ky, kx, c) order, and its eval BatchNorm as ``fma(x, alpha, beta)``; the kernels' avx512 path does
the same, without PyTorch's per-call overheads and layout reorders, and with the BatchNorm and a following max
pool in the same pass (a ResNet stem: one pass over the 112x112 maps instead of three), and a downsampling
shortcut's 2x2 average pool, 1x1 convolution and BatchNorm in one pass too. Whether oneDNN sums in
that order depends on the algorithm it picks for a shape and thread count, not on the values: its 1x1 kernel
sums the input channels in reduce blocks (each block's chain from 0, added to the sum of the blocks before),
whose size it chooses by shape and thread count (with 2 threads, 128 channels on 14x14 as 80 + 48). So each
case (shapes, arguments, threads, kernel path) is checked once on a random input against the PyTorch
computation it replaces, a 1x1 convolution with each reduce block size (one chain first, then multiples of 16
channels); that computation runs wherever none matches, and on the paths without a float convolution (avx2,
scalar).
"""
from __future__ import annotations

from typing import Callable

import torch

from onebit.deploy.exactness import ExactnessCheck
from onebit.deploy.kernels import get_kernel, library

__all__ = ["conv2d"]

_EXACT = ExactnessCheck()  # case -> the index in _reduce_blocks of the kernels' sums that give PyTorch's results
_PACKED: dict[tuple[int, bool], tuple[torch.Tensor, torch.Tensor]] = {}  # (weight pointer, 1x1) -> (weight, packed)
_CACHE_LIMIT = 256


def _pair(v) -> tuple[int, int] | None:
    v = (v, v) if isinstance(v, int) else tuple(v) if isinstance(v, (tuple, list)) else None
    return v if v is not None and len(v) == 2 and all(isinstance(i, int) for i in v) else None


def _case(x: torch.Tensor, weight: torch.Tensor, bias, stride, padding, dilation, groups, pool,
          avg_pool=None) -> tuple | None:
    """``(kh, kw, sh, sw, ph, pw, pool kernel, stride, padding, avg)`` if the kernels cover the call, else None;
    avg = 1: a 1x1 convolution of the 2x2/2 average pool of ``x`` (``avg_pool``: the arguments of avg_pool2d
    after the input)."""
    if (x.dim() != 4 or x.dtype != torch.float32 or weight.dtype != torch.float32 or weight.dim() != 4
            or bias is not None or groups != 1 or _pair(dilation) != (1, 1) or x.requires_grad or weight.requires_grad
            or not x.is_contiguous() or weight.shape[1] != x.shape[1] or weight.shape[0] % 16):
        return None
    s, p = _pair(stride), _pair(padding)
    if s is None or p is None:
        return None
    pk = ps = pp = 0
    if pool is not None:
        if not 1 <= len(pool) <= 6:
            return None
        kernel, pstride, ppad, pdilation, ceil_mode, indices = [*pool, *[None, 0, 1, False, False][len(pool) - 1:]]
        k, st, q = _pair(kernel), _pair(pstride) if pstride not in (None, (), []) else _pair(kernel), _pair(ppad)
        if (k is None or st is None or q is None or k[0] != k[1] or st[0] != st[1] or q[0] != q[1]
                or _pair(pdilation) != (1, 1) or ceil_mode or indices or 2 * q[0] > k[0]):
            return None
        pk, ps, pp = k[0], st[0], q[0]
    case = (*weight.shape[2:], *s, *p, pk, ps, pp)
    if avg_pool is None:
        return (*case, 0)
    if not 1 <= len(avg_pool) <= 6 or case[:7] != _ONE_BY_ONE or min(x.shape[2:]) < 2:
        return None
    kernel, astride, apad, ceil_mode, _, divisor = [*avg_pool, *[None, 0, False, True, None][len(avg_pool) - 1:]]
    if (_pair(kernel) != (2, 2) or (astride not in (None, (), []) and _pair(astride) != (2, 2)) or _pair(apad) != (0, 0)
            or (ceil_mode and (x.shape[2] % 2 or x.shape[3] % 2)) or divisor is not None):
        return None  # (ceil_mode: the same windows on even sides; count_include_pad: no padding)
    return (*case, 1)


_ONE_BY_ONE = (1, 1, 1, 1, 0, 0, 0)  # kh, kw, sh, sw, ph, pw, no pool


def _packed(weight: torch.Tensor, one_by_one: bool) -> torch.Tensor:
    """The kernels' weight layout: [cout][c] for a 1x1 convolution, else [kh][kw][c][cout] (cached)."""
    key = (weight.data_ptr(), one_by_one)
    cached = _PACKED.get(key)
    if cached is None or cached[0] is not weight:
        if len(_PACKED) >= _CACHE_LIMIT:
            _PACKED.clear()
        packed = weight.reshape(weight.shape[0], -1) if one_by_one else weight.permute(2, 3, 1, 0)
        cached = _PACKED[key] = (weight, packed.contiguous())
    return cached[1]


def _reduce_blocks(c: int, case: tuple) -> list[int]:
    """The input channels per reduce block to try for a case (0: one chain); the 1x1 convolutions also in blocks
    of each multiple of 16 below ``c``, largest first."""
    return [0, *range((c - 1) // 16 * 16, 0, -16)] if case[:7] == _ONE_BY_ONE else [0]


def _run(x: torch.Tensor, weight: torch.Tensor, case: tuple, affine: torch.Tensor | None,
         reduce_block: int = 0) -> torch.Tensor | None:
    """The kernels' result (a 1x1 convolution's input channels summed in blocks of ``reduce_block``, 0: one
    chain), or None where the code path in use has no float convolution."""
    kh, kw, sh, sw, ph, pw, pk, ps, pp, avg = case
    n, c, h, w = x.shape
    one_by_one = case[:7] == _ONE_BY_ONE
    if one_by_one:
        ho, wo = (h // 2, w // 2) if avg else (h, w)
    else:
        ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
        if pk:
            ho, wo = (ho + 2 * pp - pk) // ps + 1, (wo + 2 * pp - pk) // ps + 1
    if ho < 1 or wo < 1:
        return None
    out = torch.empty(n, weight.shape[0], ho, wo)
    packed = _packed(weight, one_by_one)
    affine = affine.contiguous() if affine is not None else None
    lib, threads, a = library(), torch.get_num_threads(), affine.data_ptr() if affine is not None else None
    if one_by_one:
        code = lib.ob_float_conv1x1(x.data_ptr(), n, c, h, w, avg, packed.data_ptr(), weight.shape[0], a, reduce_block,
                                    out.data_ptr(), threads)
    else:
        code = lib.ob_float_conv2d(x.data_ptr(), n, c, h, w, packed.data_ptr(), weight.shape[0], kh, kw, sh, sw, ph, pw,
                                   a, pk, ps, pp, out.data_ptr(), threads)
    if code == -3:
        raise MemoryError("float conv2d: out of memory")
    return out if code == 0 else None


def conv2d(x: torch.Tensor, weight: torch.Tensor, bias=None, stride=1, padding=0, dilation=1, groups=1,
           affine: torch.Tensor | None = None, pool: tuple | None = None, *, avg_pool: tuple | None = None,
           reference: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``reference(x)``: ``F.conv2d(x, weight, bias, stride, padding, dilation, groups)`` (of ``avg_pool2d(x,
    *avg_pool)`` if given), then the BatchNorm ``affine = [alpha, beta]`` if given, then ``max_pool2d(..., *pool)``
    if given, computed by PyTorch (in any way that gives PyTorch's results); on the kernels where they give the
    same results."""
    case = _case(x, weight, bias, stride, padding, dilation, groups, pool, avg_pool)
    if case is None:
        return reference(x)
    key = (tuple(x.shape), tuple(weight.shape), case, affine is not None, torch.get_num_threads(), get_kernel())
    blocks = _reduce_blocks(x.shape[1], case)
    found = _EXACT.first(key, tuple(x.shape), ((lambda probe, kb=kb: _run(probe, weight, case, affine, kb)) for kb in blocks),
                         reference)
    out = _run(x, weight, case, affine, blocks[found]) if found is not None else None
    return out if out is not None else reference(x)
