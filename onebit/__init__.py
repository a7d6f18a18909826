"""onebit: binary neural networks (1-bit weights and activations) in PyTorch."""
__version__ = "0.1.0"

from onebit import quant  # noqa: E402,F401
from onebit.layers import BinaryConv2d, BinaryLinear  # noqa: E402
from onebit.models import create_model, list_models  # noqa: E402
from onebit.analysis import summary  # noqa: E402

__all__ = ["BinaryConv2d", "BinaryLinear", "create_model", "list_models", "summary", "__version__"]
