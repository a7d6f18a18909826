"""How a tensor becomes +-1: sign functions, surrogate gradients, scales and their schedules.

One module per method (``rbnn``, ``irnet``, ``bireal``, ``reactnet``, ``xnor``, ``bnn``,
``dorefa``, ``recu``, ``fda``, ``ienet``); ``methods`` pairs their quantizers by name.
"""
from onebit.quant.base import Quantizer, get_quantizer, list_quantizers, precision_of, register_quantizer
from onebit.quant.functional import sign, sign_with_surrogate
from onebit.quant.methods import Method, get_method, list_methods, parse_method_options, register_method
from onebit.quant.quantizers import ApproxSign, SteSign

__all__ = [
    "Quantizer", "get_quantizer", "list_quantizers", "precision_of", "register_quantizer",
    "sign", "sign_with_surrogate", "SteSign", "ApproxSign",
    "Method", "get_method", "list_methods", "parse_method_options", "register_method",
]
