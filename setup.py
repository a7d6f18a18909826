"""Build of the compiled kernels; all package metadata lives in pyproject.toml.

Two plain C shared libraries (loaded with ctypes, no Python or PyTorch headers needed): the
1-bit deploy kernels (onebit.deploy.kernels) and the training kernels (onebit.quant.kernels).
Both extensions are optional: without a C compiler the package still installs and imports,
the deploy runtime reports what is missing and training runs its torch-op code.
"""
import platform
from glob import glob

from setuptools import Extension, setup

openmp = [] if platform.system() == "Darwin" else ["-fopenmp"]  # Apple clang has no -fopenmp

kernels = Extension(
    "onebit.deploy._kernels",
    sources=sorted(glob("onebit/deploy/csrc/*.c")),
    depends=glob("onebit/deploy/csrc/*.h"),
    extra_compile_args=["-O3", "-std=gnu11", "-ffp-contract=off", *openmp],
    extra_link_args=[*openmp, "-lm"],
    optional=True,
)

training_kernels = Extension(
    "onebit.quant._kernels",
    sources=sorted(glob("onebit/quant/csrc/*.c")),
    extra_compile_args=["-O3", "-std=gnu11", "-ffp-contract=off", *openmp],
    extra_link_args=[*openmp, "-lm"],
    optional=True,
)

setup(ext_modules=[kernels, training_kernels])
