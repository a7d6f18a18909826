"""A binary convolution on the compiled kernels: weight packing, input binarization, output transform.

Bits follow the Larq Compute Engine convention: bit 1 = -1 (negative), bit 0 = +1, packed
along input channels. The file format stores 64 bits per word (:func:`pack_signs`); the kernels
use 4-bit nibbles or 64-bit channel words, whichever the code path in use runs (see
``csrc/onebit_kernels.h``), both built once at load (:func:`kernel_weights`).
A binary linear layer is the 1x1 convolution of an N x C x 1 x 1 input.
"""
from __future__ import annotations

import ctypes
from dataclasses import dataclass

import numpy as np
import torch

from onebit.deploy.kernels import ConvOutput, ConvShape, Padding, constant, kernel_has_words, library

__all__ = ["pack_signs", "unpack_signs", "kernel_weights", "amx_weights", "tap_sums", "BinaryConvKernel", "BitPlanes"]



def pack_signs(negative: np.ndarray) -> np.ndarray:
    """``[cout, cg, kh, kw]`` booleans (True = -1) -> ``[cout, kh, kw, ceil(cg/64)]`` uint64 words,
    channel ``c`` at bit ``c % 64`` of word ``c // 64``, tail bits 0."""
    cout, cg, kh, kw = negative.shape
    words = -(-cg // 64)
    bits = np.zeros((cout, kh, kw, words * 64), dtype=np.uint8)
    bits[..., :cg] = negative.transpose(0, 2, 3, 1)
    return np.packbits(bits, axis=-1, bitorder="little").view("<u8").reshape(cout, kh, kw, words)


def unpack_signs(words: np.ndarray, cg: int) -> np.ndarray:
    """Inverse of :func:`pack_signs`: ``[cout, cg, kh, kw]`` booleans, True = -1."""
    cout, kh, kw, _ = words.shape
    bits = np.unpackbits(np.ascontiguousarray(words, dtype="<u8").view(np.uint8), axis=-1, bitorder="little")
    return bits.reshape(cout, kh, kw, -1)[..., :cg].transpose(0, 3, 1, 2).astype(bool)


def kernel_weights(negative: np.ndarray, groups: int, words: bool = False) -> np.ndarray:
    """Weights in the kernels' layout ``[groups, ceil(cog/nr), G, nr]``, G running over (channel
    plane q, ky, kx). Nibble layout (nr = 6): uint8, the nibble of 4 input channels at one tap
    shifted left by 4 (the byte offset of its lookup table). Channel words (nr = 8): uint64, 64
    input channels at one tap, channel 64q+i at bit i."""
    cout, cg, kh, kw = negative.shape
    per, nr = (64, constant("nr_words")) if words else (4, constant("nr"))
    q = -(-cg // per)
    bits = np.zeros((cout, per * q, kh, kw), dtype=np.uint8)
    bits[:, :cg] = negative
    bits = np.ascontiguousarray(bits.reshape(cout, q, per, kh, kw).transpose(0, 1, 3, 4, 2))  # [cout, q, kh, kw, per]
    if words:
        units = np.packbits(bits, axis=-1, bitorder="little").view("<u8")[..., 0]
    else:
        units = (bits << np.arange(4, dtype=np.uint8)).sum(-1, dtype=np.uint8) << 4
    cog, blocks = cout // groups, -(-(cout // groups) // nr)
    padded = np.zeros((groups, blocks * nr, q * kh * kw), dtype=units.dtype)
    padded[:, :cog] = units.reshape(groups, cog, q * kh * kw)
    return np.ascontiguousarray(padded.reshape(groups, blocks, nr, -1).transpose(0, 1, 3, 2))


def amx_weights(words: np.ndarray) -> np.ndarray:
    """The AMX GEMM's weights (``csrc/words_amx.c``) from the channel-word ones of :func:`kernel_weights`:
    +-1 bytes (bit 1 -> -1) ``[groups, ceil(cog/16), G, 16, 16, 4]`` int8: per tile of 16 output channels
    and word row, row ``i`` holds channels ``4i .. 4i+3`` of the word for each output channel (AMX's VNNI
    order). Output channels past the last one (and of the word tile's padding) are +1."""
    groups, blocks, g, nr = words.shape
    per_group = np.ascontiguousarray(words.transpose(0, 1, 3, 2)).reshape(groups, blocks * nr, g)
    tiles = -(-(blocks * nr) // 16)
    padded = np.zeros((groups, tiles * 16, g), dtype="<u8")
    padded[:, : blocks * nr] = per_group
    bits = np.unpackbits(padded.view(np.uint8).reshape(groups, tiles, 16, g, 8), axis=-1, bitorder="little")
    signs = (1 - 2 * bits.astype(np.int8)).reshape(groups, tiles, 16, g, 16, 4)  # [.., channel, g, row, 4]
    return np.ascontiguousarray(signs.transpose(0, 1, 3, 4, 2, 5))


def tap_sums(negative: np.ndarray) -> np.ndarray:
    """``[cout, kh*kw]`` int32: the sum over input channels of the +-1 weights at each tap
    (what zero padding removes at the border)."""
    cout, cg, kh, kw = negative.shape
    return (cg - 2 * negative.sum(axis=1, dtype=np.int32)).reshape(cout, kh * kw).astype(np.int32)


def _border_classes(count: int, stride: int, pad: int, k: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Class of each output row (column) by which kernel rows (columns) read the padding, and
    the masks of the classes; class 0 reads none."""
    taps = np.arange(count)[:, None] * stride - pad + np.arange(k)[None, :]
    masks = (taps < 0) | (taps >= size)
    index = {bytes(np.zeros(k, dtype=bool)): 0}
    classes = np.array([index.setdefault(bytes(m), len(index)) for m in masks], dtype=np.uint8)
    return classes, np.array([np.frombuffer(key, dtype=bool) for key in index])


@dataclass
class Layout:
    """The kernels' description of one convolution on one input size."""

    shape: ConvShape
    padding: Padding | None  # zero-padding correction tables (None: +1 padding)
    tables: tuple = ()  # arrays the padding struct points into


@dataclass
class BitPlanes:
    """A binarized activation already laid out for the convolution that reads it."""

    data: torch.Tensor  # uint8, ConvShape.input_bytes
    layout: Layout

    @property
    def shape(self) -> ConvShape:
        return self.layout.shape


def _check(code: int, what: str) -> None:
    if code == -1:
        raise ValueError(f"{what}: bit-packed output in channel words needs whole words per task (64 | channels per group)")
    if code == -2:
        raise ValueError(f"{what}: planes in channel words, but the code path in use has none (kernel changed?)")
    if code == -4:
        raise ValueError(f"{what}: image range outside the batch")
    if code:
        raise MemoryError(f"{what}: out of memory")


def _ptr(t: torch.Tensor | np.ndarray | None) -> int | None:
    if t is None:
        return None
    return t.data_ptr() if isinstance(t, torch.Tensor) else t.ctypes.data


class BinaryConvKernel:
    """One binary convolution: ``negative`` ``[cout, cin/groups, kh, kw]`` weight signs (True = -1).

    ``zero_padding=True`` reproduces a layer trained with 0-padding of its +-1 input (the border
    correction is applied); ``False`` pads with +1 (native). Call :meth:`binarize` to turn a float
    NCHW input into planes, then :meth:`run`. ``reuse_planes``: every call for one input size
    returns the same planes buffer (its padding is never written, so it stays valid), which saves
    allocating and zeroing it; for owners that consume the planes before the next call (the runtime).
    The layout (nibbles or channel words) is the one of the code path in use when the planes are made;
    ``allow_words = False`` keeps this convolution on nibbles (a producer that cannot write whole words).
    """

    allow_words = True

    def __init__(self, negative: np.ndarray, *, stride=(1, 1), padding=(0, 0), groups: int = 1, zero_padding: bool = True,
                 reuse_planes: bool = False):
        negative = np.asarray(negative, dtype=bool)
        if negative.ndim != 4:
            raise ValueError(f"binary conv weights must be [cout, cin/groups, kh, kw], got shape {negative.shape}")
        self.cout, self.cg, self.kh, self.kw = negative.shape
        if self.cout % groups:
            raise ValueError(f"{self.cout} output channels are not divisible by groups={groups}")
        self.stride, self.padding, self.groups = tuple(stride), tuple(padding), groups
        self.zero_padding = bool(zero_padding) and any(self.padding)
        self.weights = {words: torch.from_numpy(kernel_weights(negative, groups, words)) for words in (False, True)}
        self._weight_ptr = {words: w.data_ptr() for words, w in self.weights.items()}
        self._amx_weights: torch.Tensor | None = None  # made at the first run on the amx path
        self._outputs: dict[tuple, tuple] = {}  # run()'s output descriptions, by the pointers they hold
        self.tap_sums = tap_sums(negative).reshape(self.cout, self.kh, self.kw)
        self._layouts: dict[tuple[int, int, int, bool], Layout] = {}
        self._planes: dict[tuple[int, int, int, bool], BitPlanes] | None = {} if reuse_planes else None

    def words(self) -> bool:
        """Does this convolution run on channel words now (else nibble planes)?"""
        return self.allow_words and kernel_has_words()

    def layout(self, n: int, h: int, w: int) -> Layout:
        """The kernels' layout for an ``n x cin x h x w`` input (cached per size and layout kind)."""
        key = (n, h, w, self.words())
        if key not in self._layouts:
            s = ConvShape(n=n, c=self.cg * self.groups, h=h, w=w, cout=self.cout, groups=self.groups,
                          kh=self.kh, kw=self.kw, sh=self.stride[0], sw=self.stride[1], ph=self.padding[0],
                          pw=self.padding[1], words=int(key[3]))
            if library().ob_conv_init(ctypes.byref(s)) != 0:
                raise ValueError(
                    f"binary conv {self.cout}x{self.cg * self.groups}x{self.kh}x{self.kw} (stride {self.stride}, "
                    f"padding {self.padding}) cannot run on a {n}x{self.cg * self.groups}x{h}x{w} input"
                )
            self._layouts[key] = Layout(s, None) if not self.zero_padding else self._with_padding_fix(s)
        return self._layouts[key]

    def _with_padding_fix(self, s: ConvShape) -> Layout:
        rows, row_masks = _border_classes(s.ho, s.sh, s.ph, s.kh, s.h)
        cols, col_masks = _border_classes(s.wo, s.sw, s.pw, s.kw, s.w)
        padded = row_masks[:, None, :, None] | col_masks[None, :, None, :]  # [rows, cols, kh, kw]
        value = np.ascontiguousarray(np.einsum("okl,rckl->orc", self.tap_sums, padded.astype(np.int32)), dtype=np.int32)
        fix = Padding(n_rows=len(row_masks), n_cols=len(col_masks), row_class=rows.ctypes.data,
                      col_class=cols.ctypes.data, value=value.ctypes.data)
        return Layout(s, fix, (rows, cols, value))

    def _weights_for(self, s: ConvShape) -> int:
        """The weights of the code path in use for this layout (their pointer)."""
        if not library().ob_conv_amx(ctypes.byref(s)):
            return self._weight_ptr[bool(s.words)]
        if self._amx_weights is None:
            self._amx_weights = torch.from_numpy(amx_weights(self.weights[True].numpy()))
        return self._amx_weights.data_ptr()

    def new_planes(self, n: int, h: int, w: int) -> BitPlanes:
        """Planes for an ``n x cin x h x w`` input with zero (+1) padding."""
        key = (n, h, w, self.words())
        if self._planes is not None and key in self._planes:
            return self._planes[key]
        layout = self.layout(n, h, w)
        planes = BitPlanes(torch.zeros(layout.shape.input_bytes, dtype=torch.uint8), layout)
        if self._planes is not None:
            self._planes[key] = planes
        return planes

    def binarize(self, x: torch.Tensor, thresholds: torch.Tensor | None = None, threads: int = 1) -> BitPlanes:
        """Planes of ``sign(x - threshold)``; ``thresholds`` is ``[C]`` (per channel) or ``[N, C]``."""
        if x.dim() != 4 or x.shape[1] != self.cg * self.groups:
            raise ValueError(f"expected an N x {self.cg * self.groups} x H x W input, got {tuple(x.shape)}")
        x = x.detach().to(torch.float32).contiguous()
        planes = self.new_planes(x.shape[0], x.shape[2], x.shape[3])
        stride_n = 0
        if thresholds is not None:
            thresholds = thresholds.detach().to(torch.float32).contiguous()
            stride_n = thresholds.shape[-1] if thresholds.dim() == 2 else 0
        code = library().ob_binarize(ctypes.byref(planes.shape), x.data_ptr(), _ptr(thresholds), stride_n,
                                     planes.data.data_ptr(), threads)
        _check(code, "binarize")
        return planes

    def run(self, planes: BitPlanes, mult: torch.Tensor | None, bias: torch.Tensor | None, *,
            residual: torch.Tensor | None = None, float_out: bool = True, bits_for: "BinaryConvKernel | None" = None,
            thresh: torch.Tensor | None = None, flip: torch.Tensor | None = None,
            float_thresh: torch.Tensor | None = None, threads: int = 1, out: torch.Tensor | None = None,
            images: tuple[int, int] | None = None, pre: torch.Tensor | None = None):
        """Convolve (only the images ``[first, last)`` of the batch if ``images`` is given: the outputs
        are the batch's tensors, of which the other images are left as they are).

        Float output (NCHW, into ``out`` if given, which may be ``residual`` itself):
        ``fma(dot * pre, mult, bias) (+ residual)``, ``dot * pre`` rounded to float32 (``pre``: 1 if not given).
        Bit planes for the next binary conv ``bits_for``: negative where ``(dot < thresh) != flip``
        (with ``float_out=False``: LCE's bit-packed output), or where the float output is below
        ``float_thresh`` (the next layer's sign, computed while the output is in cache).
        Returns the float tensor, the planes, or both as a tuple."""
        s = planes.shape
        if float_out and out is None:
            out = torch.empty(s.n, s.cout, s.ho, s.wo)
        if residual is not None:
            if residual.dtype != torch.float32 or not residual.is_contiguous():
                residual = residual.detach().to(torch.float32).contiguous()
            if residual.shape != (s.n, s.cout, s.ho, s.wo):
                raise ValueError(f"residual shape {tuple(residual.shape)} does not match the conv output {(s.n, s.cout, s.ho, s.wo)}")
        # the output description is cached by what it points to (a caller reusing its buffers, like the
        # runtime, builds it once); the next planes are part of it when bits_for returns the same ones each call
        key = (_ptr(mult), _ptr(bias), _ptr(residual), _ptr(out), _ptr(thresh), _ptr(flip), _ptr(float_thresh),
               bits_for and (id(bits_for), s.n, s.ho, s.wo, bits_for.words()), _ptr(pre))
        cached = self._outputs.get(key)
        if cached is None:
            spec, nxt = ConvOutput(pre=key[8], mult=key[0], bias=key[1], residual=key[2], out=key[3]), None
            if bits_for is not None:
                nxt = bits_for.new_planes(s.n, s.ho, s.wo)
                spec.thresh, spec.flip, spec.float_thresh = key[4], key[5], key[6]
                spec.next, spec.next_planes = ctypes.pointer(nxt.shape), nxt.data.data_ptr()
            if bits_for is None or bits_for._planes is not None:
                if len(self._outputs) >= 64:
                    self._outputs.clear()
                self._outputs[key] = (spec, nxt, bits_for)  # (holding bits_for keeps its id unique)
        else:
            spec, nxt, _ = cached
        fix = planes.layout.padding
        first, last = images if images is not None else (0, s.n)
        code = library().ob_conv_run(ctypes.byref(s), planes.data.data_ptr(), self._weights_for(s),
                                     ctypes.byref(fix) if fix is not None else None, ctypes.byref(spec), first, last,
                                     threads)
        _check(code, "binary conv")
        if out is not None and nxt is not None:
            return out, nxt
        return out if out is not None else nxt
