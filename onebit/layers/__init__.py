"""Binary layers: convolution and linear layers that take quantizers as arguments."""
from onebit.layers.binary import BinaryConv2d, BinaryLinear
from onebit.layers.encoding import ThermometerEncoding
from onebit.layers.fixed_point import FixedPoint

__all__ = ["BinaryConv2d", "BinaryLinear", "ThermometerEncoding", "FixedPoint"]
