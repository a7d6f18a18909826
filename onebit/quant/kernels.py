"""The compiled training kernels (``onebit/quant/csrc``), loaded with ctypes.

A plain C shared library built by ``pip install -e .`` (``setup.py``, optional: without a C
compiler the quantizers run their torch-op code). It does not link against PyTorch. Code
paths: ``baseline`` (portable C, the compiler's baseline vector ISA), ``avx2`` and ``avx512``
(the same C compiled for AVX2 / AVX-512F), chosen at run time from CPUID; all give the same
bits (fixed summation order). ``ONEBIT_TRAIN_KERNEL=baseline|avx2|avx512`` or
:func:`set_path` forces one.
"""
from __future__ import annotations

import ctypes
import importlib.machinery
import os
from pathlib import Path

import torch

__all__ = ["available", "unavailable_reason", "paths", "set_path", "path_name",
           "standardized_sign_forward", "standardized_sign_backward"]

ABI_VERSION = 1
PATH_NAMES = ("baseline", "avx2", "avx512")
_HERE = Path(__file__).resolve().parent
_lib: ctypes.CDLL | None = None
_missing = ""


def _load() -> ctypes.CDLL | None:
    global _lib, _missing
    if _lib is not None or _missing:
        return _lib
    path = next((_HERE / f"_kernels{s}" for s in importlib.machinery.EXTENSION_SUFFIXES
                 if (_HERE / f"_kernels{s}").is_file()), None)
    if path is None:
        _missing = f"the training kernels are not built (no _kernels*.so in {_HERE}; pip install -e . builds them)"
        return None
    lib = ctypes.CDLL(str(path))
    lib.obq_abi_version.restype, lib.obq_abi_version.argtypes = ctypes.c_int, []
    if lib.obq_abi_version() != ABI_VERSION:
        _missing = f"the built training kernels have ABI {lib.obq_abi_version()}, this onebit expects {ABI_VERSION}: rebuild"
        return None
    p, i64, f32, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float, ctypes.c_int
    for name, restype, argtypes in (
        ("obq_path_supported", i32, [ctypes.c_char_p]),
        ("obq_set_path", i32, [ctypes.c_char_p]),
        ("obq_path_name", ctypes.c_char_p, []),
        ("obq_standardized_sign_forward", None, [p, p, p, i64, i64, i32]),
        ("obq_standardized_sign_backward", None, [p, p, p, p, i64, i64, f32, f32, i32]),
    ):
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, argtypes
    _lib = lib
    forced = os.environ.get("ONEBIT_TRAIN_KERNEL", "").strip()
    if forced:
        set_path(forced)
    return lib


def available() -> bool:
    """Whether the compiled kernels are built and loadable."""
    return _load() is not None


def unavailable_reason() -> str:
    """Why :func:`available` is False (empty when it is True)."""
    _load()
    return _missing


def _library() -> ctypes.CDLL:
    lib = _load()
    if lib is None:
        raise RuntimeError(_missing)
    return lib


def paths() -> list[str]:
    """The code paths this build and CPU run, slowest first."""
    lib = _library()
    return [name for name in PATH_NAMES if lib.obq_path_supported(name.encode()) == 1]


def set_path(name: str) -> None:
    """Force a code path, or ``"auto"``: the best one the CPU runs."""
    lib = _library()
    if name == "auto":
        lib.obq_set_path(None)
    elif lib.obq_set_path(name.encode()) != 0:
        raise ValueError(f"training kernel path {name!r} (ONEBIT_TRAIN_KERNEL / set_path) is not one this CPU runs: "
                         f"choose from auto, {', '.join(paths())}")


def path_name() -> str:
    """The code path in use."""
    return _library().obq_path_name().decode()


def sample_major(x: torch.Tensor) -> torch.Tensor:
    """``x`` if each sample's values are one contiguous block (NCHW or channels-last), else a contiguous copy."""
    if x.is_contiguous() or (x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)):
        return x
    return x.contiguous()


def standardized_sign_forward(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sign(x - mean), mean)`` per sample, for a float32 CPU ``x`` in :func:`sample_major` layout."""
    n = x.shape[0]
    out, mean = torch.empty_like(x), x.new_empty(n)
    _library().obq_standardized_sign_forward(x.data_ptr(), out.data_ptr(), mean.data_ptr(), n, x[0].numel() if n else 0,
                                             torch.get_num_threads())
    return out, mean


def standardized_sign_backward(grad: torch.Tensor, x: torch.Tensor, mean: torch.Tensor, k: float, t: float) -> torch.Tensor:
    """The gradient of RBNN's standardised sign (``onebit.quant.rbnn``) for float32 CPU tensors,
    ``grad`` with ``x``'s strides."""
    n = x.shape[0]
    dx = torch.empty_like(x)
    _library().obq_standardized_sign_backward(grad.data_ptr(), x.data_ptr(), mean.data_ptr(), dx.data_ptr(), n,
                                              x[0].numel() if n else 0, k, t, torch.get_num_threads())
    return dx
