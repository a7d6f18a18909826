"""The compiled 1-bit kernels (``onebit/deploy/csrc``), loaded with ctypes, and the choice of code path.

The shared library is built by ``pip install -e .`` (``setup.py``) with the system C compiler;
it does not link against PyTorch. Code paths: ``scalar`` (portable C: 64-bit SWAR on the nibble
layout, 64-bit popcount on the channel-word layout), ``avx2`` (x86-64 with AVX2: nibble table
lookups), ``avx512`` (AVX-512 F/BW/VL + VPOPCNTDQ: ``vpopcntq`` on the channel-word layout,
AVX2 for the rest) and ``amx`` (the avx512 path with an AMX int8 GEMM on +-1 bytes for the long
stride-1 word convolutions, see ``csrc/words_amx.c``; needs AMX-INT8 and Linux's permission to use
the tile registers). Each is compiled for its instruction set only and chosen at run time from
CPUID, so one build runs on any x86-64. The best path the CPU runs is used, except ``amx``, which is
opt-in (on Bi-Real-18 it measured no faster than ``avx512``), unless
``ONEBIT_KERNEL=scalar|avx2|avx512|amx`` or :func:`set_kernel` forces one.
"""
from __future__ import annotations

import ctypes
import functools
import importlib.machinery
import os
from pathlib import Path

__all__ = ["KernelsUnavailable", "library", "constant", "available_kernels", "set_kernel", "get_kernel", "ConvShape", "Padding", "ConvOutput"]

ABI_VERSION = 9
KERNEL_NAMES = ("scalar", "avx2", "avx512", "amx")
_HERE = Path(__file__).resolve().parent
_lib: ctypes.CDLL | None = None
_words = False  # does the selected code path have the channel-word layout (kept by set_kernel)


class KernelsUnavailable(RuntimeError):
    """The compiled deploy kernels are missing (the package was installed without building them)."""


class ConvShape(ctypes.Structure):  # mirrors ob_conv in onebit_kernels.h
    _fields_ = [(name, ctypes.c_int32) for name in (
        "n", "c", "h", "w", "cout", "groups", "kh", "kw", "sh", "sw", "ph", "pw", "words",
        "ho", "wo", "cg", "cog", "q", "g", "unit", "nr", "k_bits", "hq", "wq", "ob", "pblocks",
    )] + [(name, ctypes.c_int64) for name in (
        "positions", "phase_bytes", "plane_bytes", "image_bytes", "input_bytes",
    )]


class Padding(ctypes.Structure):  # mirrors ob_padding
    _fields_ = [("n_rows", ctypes.c_int32), ("n_cols", ctypes.c_int32), ("row_class", ctypes.c_void_p),
                ("col_class", ctypes.c_void_p), ("value", ctypes.c_void_p)]


class ConvOutput(ctypes.Structure):  # mirrors ob_output
    _fields_ = [
        ("pre", ctypes.c_void_p), ("mult", ctypes.c_void_p), ("bias", ctypes.c_void_p), ("residual", ctypes.c_void_p),
        ("out", ctypes.c_void_p), ("thresh", ctypes.c_void_p), ("flip", ctypes.c_void_p),
        ("float_thresh", ctypes.c_void_p), ("next", ctypes.POINTER(ConvShape)), ("next_planes", ctypes.c_void_p),
    ]


def _library_path() -> Path:
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = _HERE / f"_kernels{suffix}"
        if path.is_file():
            return path
    raise KernelsUnavailable(
        f"the onebit 1-bit kernels are not built (no _kernels*.so in {_HERE}); "
        "reinstall with a C compiler available: pip install -e . (or pip install onebit from source)"
    )


def _declare(lib: ctypes.CDLL) -> None:
    p, i32, i64 = ctypes.c_void_p, ctypes.c_int, ctypes.c_int64
    shape = ctypes.POINTER(ConvShape)
    signatures = {
        "ob_constant": (i32, [ctypes.c_char_p]),
        "ob_kernel_supported": (i32, [ctypes.c_char_p]),
        "ob_set_kernel": (i32, [ctypes.c_char_p]),
        "ob_kernel_name": (ctypes.c_char_p, []),
        "ob_kernel_words": (i32, []),
        "ob_conv_amx": (i32, [shape]),
        "ob_conv_init": (i32, [shape]),
        "ob_binarize": (i32, [shape, p, p, i64, p, i32]),
        "ob_conv_run": (i32, [shape, p, p, ctypes.POINTER(Padding), ctypes.POINTER(ConvOutput), i64, i64, i32]),
        "ob_max_pool2d": (i32, [p, i64] + [i32] * 10 + [p, i32, p, i32]),
        "ob_max_pool2d_nhwc": (i32, [p] + [i32] * 12 + [p, p, i32]),
        "ob_avg_pool2d": (i32, [p, i64] + [i32] * 12 + [p, i32]),
        "ob_float_conv2d": (i32, [p] + [i32] * 4 + [p] + [i32] * 7 + [p] + [i32] * 3 + [p, i32]),
        "ob_float_conv1x1": (i32, [p] + [i32] * 5 + [p, i32, p, i32, p, i32]),
        "ob_dependent_adds": (i64, [i64]),
        "ob_popcount_loop": (i64, [i64]),
        "ob_task_transform": (i32, [i32]),
        "ob_amx_loop": (i64, [i64]),
    }
    for name, (restype, argtypes) in signatures.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, argtypes


def library() -> ctypes.CDLL:
    """The loaded kernel library (loaded once; honours ``ONEBIT_KERNEL``)."""
    global _lib
    if _lib is None:
        lib = ctypes.CDLL(str(_library_path()))
        lib.ob_abi_version.restype, lib.ob_abi_version.argtypes = ctypes.c_int, []
        if lib.ob_abi_version() != ABI_VERSION:
            raise KernelsUnavailable(
                f"the built kernels have ABI {lib.ob_abi_version()}, this onebit expects {ABI_VERSION}: "
                "rebuild with pip install -e ."
            )
        _declare(lib)
        _lib = lib
        forced = os.environ.get("ONEBIT_KERNEL", "").strip()
        set_kernel(forced or "auto")
    return _lib


@functools.cache
def constant(name: str) -> int:
    """A layout constant or limit of the C code, named once in ``onebit_kernels.h``: ``nr`` and
    ``nr_words`` (output channels per weight block of the nibble / word tile), ``max_kernel_side``,
    ``max_dot_length`` (the largest ``kh * kw * cg``: counts are 16-bit)."""
    value = library().ob_constant(name.encode())
    if value < 0:
        raise KeyError(f"the kernels define no constant {name!r}")
    return value


def available_kernels() -> list[str]:
    """The code paths this machine can run, slowest first."""
    lib = library()
    return [name for name in KERNEL_NAMES if lib.ob_kernel_supported(name.encode()) == 1]


def set_kernel(name: str) -> None:
    """Force a code path (``"scalar"``, ``"avx2"``, ``"avx512"``, ``"amx"``) or go back to the best one (``"auto"``,
    never ``amx``)."""
    code = library().ob_set_kernel(name.encode())
    if code == -1:
        raise ValueError(f"unknown kernel {name!r} (ONEBIT_KERNEL / set_kernel): choose from auto, {', '.join(KERNEL_NAMES)}")
    if code == -2:
        raise ValueError(f"kernel {name!r} is not supported by this CPU; available: {', '.join(available_kernels())}")
    global _words
    _words = library().ob_kernel_words() == 1


def use_task_transform(on: bool) -> bool:
    """Let the code path transform a whole task's outputs at once where it can (the default), or force the
    per-channel loops (the same results; for before/after timing in one process). Returns the previous setting."""
    return library().ob_task_transform(int(on)) == 1


def get_kernel() -> str:
    """The code path in use."""
    return library().ob_kernel_name().decode()


def kernel_has_words() -> bool:
    """Does the code path in use have the channel-word layout (else only nibble planes)?"""
    library()
    return _words
