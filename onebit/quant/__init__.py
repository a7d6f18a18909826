"""How a tensor becomes +-1: sign functions, surrogate gradients, scales and their schedules.

One module per method (``rbnn``, ``irnet``, ``bireal``, ``reactnet``, ``xnor``, ``bnn``,
``dorefa``, ``recu``, ``fda``, ``ienet``); ``methods`` pairs their quantizers by name.
"""
from onebit.quant.base import Quantizer, get_quantizer, list_quantizers, precision_of, register_quantizer
from onebit.quant.functional import sign, sign_with_surrogate
from onebit.quant.methods import Method, get_method, list_methods, parse_method_options, register_method
from onebit.quant.quantizers import ApproxSign, FrozenBinaryWeight, SteSign
from onebit.quant.bireal import MagnitudeAwareSign
from onebit.quant.bnn import BnnWeight
from onebit.quant.dorefa import DorefaInput, DorefaWeight
from onebit.quant.fda import FdaInput, FdaWeight
from onebit.quant.ienet import DualShiftSign, IeNetWeight
from onebit.quant.irnet import EdeSign, LibraPBWeight
from onebit.quant.rbnn import RbnnInput, RbnnWeight
from onebit.quant.reactnet import RSign
from onebit.quant.recu import RecuInput, RecuWeight
from onebit.quant.xnor import XnorWeight

__all__ = [
    "Quantizer", "get_quantizer", "list_quantizers", "precision_of", "register_quantizer",
    "sign", "sign_with_surrogate",
    "Method", "get_method", "list_methods", "parse_method_options", "register_method",
    # the quantizers, by method (``onebit methods`` pairs them)
    "SteSign", "ApproxSign", "FrozenBinaryWeight", "MagnitudeAwareSign", "BnnWeight", "DorefaInput", "DorefaWeight", "FdaInput",
    "FdaWeight", "DualShiftSign", "IeNetWeight", "EdeSign", "LibraPBWeight", "RbnnInput", "RbnnWeight", "RSign",
    "RecuInput", "RecuWeight", "XnorWeight",
]
