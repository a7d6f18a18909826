"""Binary layers: convolution and linear layers that take quantizers as arguments."""
from onebit.layers.binary import BinaryConv2d, BinaryLinear

__all__ = ["BinaryConv2d", "BinaryLinear"]
