"""Build of the compiled 1-bit kernels; all package metadata lives in pyproject.toml.

The kernels are a plain C shared library (loaded with ctypes by onebit.deploy.kernels, no
Python or PyTorch headers needed). The extension is optional: without a C compiler the
package still installs and imports, and only the deploy runtime reports what is missing.
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

setup(ext_modules=[kernels])
