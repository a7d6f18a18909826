"""Real 1-bit inference on the CPU: export trained models to bit-packed files and run them.

    from onebit.deploy import export, load
    export(model, example_input, "model.onebit")   # trace, fold BN/scales, pack bits
    runtime = load("model.onebit")                 # binary layers on the compiled kernels
    logits = runtime(images)                       # NCHW float32 (NumPy or torch) -> logits

The compiled kernels (``csrc/``) are built by ``pip install -e .``; without them the package
imports and only these functions report what is missing.
"""
from onebit.deploy.export import build_program, export
from onebit.deploy.kernels import KernelsUnavailable, available_kernels, get_kernel, set_kernel
from onebit.deploy.quantizers import ExportError
from onebit.deploy.runtime import OnebitModel, load

__all__ = ["export", "build_program", "load", "OnebitModel", "ExportError", "KernelsUnavailable",
           "available_kernels", "get_kernel", "set_kernel"]
