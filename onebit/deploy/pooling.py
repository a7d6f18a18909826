"""Float max / average pooling of NCHW tensors on the compiled kernels, with PyTorch's exact results.

This PyTorch build's NCHW pooling is 10-20x slower than its channels-last pooling (max 3x3/2 on
64 x 112 x 112: 6.7 ms against 0.4 ms), and the 1-bit runtime keeps NCHW; cases the kernels do
not cover (dilation, other dtypes, autograd) go to PyTorch.
"""
from __future__ import annotations

import torch

from onebit.deploy.kernels import library

__all__ = ["max_pool2d", "signed_max_pool2d", "avg_pool2d"]


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def _pooled_side(size: int, k: int, s: int, p: int, ceil_mode: bool) -> int:
    """PyTorch's pooling output size."""
    out = (size + 2 * p - k + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


def _poolable(x: torch.Tensor) -> bool:
    return x.dim() == 4 and x.dtype == torch.float32 and x.is_contiguous() and not x.requires_grad


def _channels_last(x: torch.Tensor) -> bool:
    """Is ``x`` a float32 NHWC tensor (and not also NCHW-contiguous)?"""
    return (x.dim() == 4 and x.dtype == torch.float32 and not x.is_contiguous() and not x.requires_grad
            and x.is_contiguous(memory_format=torch.channels_last))


def max_pool2d(x: torch.Tensor, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False) -> torch.Tensor:
    """``F.max_pool2d`` (same results), on the kernels' NCHW implementation where it applies."""
    return signed_max_pool2d(x, None, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


def signed_max_pool2d(x: torch.Tensor, negate: torch.Tensor | None, kernel_size, stride=None, padding=0, dilation=1,
                      ceil_mode=False, return_indices=False) -> torch.Tensor:
    """``max_pool2d`` of ``x``, but ``-max_pool2d(-x)`` on the channels where the boolean ``[C]`` ``negate`` is
    True (the window minimum: the pool of ``x * alpha`` with ``alpha < 0``, taken before the scale).
    A channels-last ``x`` is pooled straight into a contiguous (NCHW) result."""
    k, d, p = _pair(kernel_size), _pair(dilation), _pair(padding)
    st = _pair(stride) if stride not in (None, (), []) else k
    n, c = x.shape[:2] if x.dim() == 4 else (0, 0)
    ho = wo = 0
    nhwc = _channels_last(x)
    if ((_poolable(x) or nhwc) and d == (1, 1) and not ceil_mode and not return_indices and p[0] * 2 <= k[0]
            and p[1] * 2 <= k[1]):
        ho, wo = _pooled_side(x.shape[2], k[0], st[0], p[0], False), _pooled_side(x.shape[3], k[1], st[1], p[1], False)
    if ho < 1 or wo < 1:  # PyTorch's (and its errors)
        x = x.contiguous() if nhwc else x
        if negate is None or return_indices:
            return torch.nn.functional.max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode, return_indices)
        flip = negate.view(1, -1, *([1] * (x.dim() - 2)))
        pooled = torch.nn.functional.max_pool2d(torch.where(flip, -x, x), kernel_size, stride, padding, dilation, ceil_mode)
        return torch.where(flip, -pooled, pooled)
    out = torch.empty(n, c, ho, wo)
    flags = negate.to(torch.uint8).contiguous() if negate is not None else None
    if nhwc:
        if library().ob_max_pool2d_nhwc(x.data_ptr(), n, c, x.shape[2], x.shape[3], k[0], k[1], st[0], st[1], p[0],
                                        p[1], ho, wo, flags.data_ptr() if flags is not None else None, out.data_ptr(),
                                        torch.get_num_threads()):
            raise MemoryError("max_pool2d: out of memory")
        return out
    if library().ob_max_pool2d(x.data_ptr(), n * c, x.shape[2], x.shape[3], k[0], k[1], st[0], st[1], p[0], p[1], ho,
                               wo, flags.data_ptr() if flags is not None else None, c, out.data_ptr(),
                               torch.get_num_threads()):
        raise MemoryError("max_pool2d: out of memory")
    return out


def avg_pool2d(x: torch.Tensor, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None) -> torch.Tensor:
    """``F.avg_pool2d`` (same results: the same window rules and summation order), on the
    kernels' NCHW implementation where it applies."""
    k, p = _pair(kernel_size), _pair(padding)
    st = _pair(stride) if stride not in (None, (), []) else k
    if not _poolable(x) or p[0] * 2 > k[0] or p[1] * 2 > k[1]:
        return torch.nn.functional.avg_pool2d(x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                                              divisor_override)
    n, c, h, w = x.shape
    ho, wo = _pooled_side(h, k[0], st[0], p[0], ceil_mode), _pooled_side(w, k[1], st[1], p[1], ceil_mode)
    if ho < 1 or wo < 1:
        return torch.nn.functional.avg_pool2d(x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                                              divisor_override)
    out = torch.empty(n, c, ho, wo)
    if library().ob_avg_pool2d(x.data_ptr(), n * c, h, w, k[0], k[1], st[0], st[1], p[0], p[1], ho, wo,
                               int(count_include_pad), int(divisor_override or 0), out.data_ptr(),
                               torch.get_num_threads()):
        raise MemoryError("avg_pool2d: out of memory")
    return out
