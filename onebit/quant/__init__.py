"""How a tensor becomes +-1: sign functions, surrogate gradients, scales and their schedules."""
from onebit.quant.base import Quantizer, get_quantizer, list_quantizers, precision_of, register_quantizer
from onebit.quant.functional import sign, sign_with_surrogate
from onebit.quant.methods import Method, get_method, list_methods, register_method
from onebit.quant.quantizers import SteSign

__all__ = [
    "Quantizer", "get_quantizer", "list_quantizers", "precision_of", "register_quantizer",
    "sign", "sign_with_surrogate", "SteSign",
    "Method", "get_method", "list_methods", "register_method",
]
