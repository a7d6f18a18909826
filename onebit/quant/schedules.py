"""Per-epoch schedules of the quantizers' parameters (all evaluated once per epoch, e = 0..E-1).

The training engine computes the temperature ``t(e)`` from ``--Tmin/--Tmax`` and hands it to
every module with ``set_temperature(t)``; each quantizer derives its own constants from it
(``surrogate_scale`` for the ``k`` of RBNN, IR-Net and IE-Net). Methods scheduled on the
epoch itself (ReCU's tau, FDA's number of terms and noise weight) compute their value in
``on_epoch_start(epoch, epochs)`` with the functions below.

:func:`set_epoch_temperature` is that step for any training loop and any model (seed 002's
``EDEHook``): it schedules every temperature-driven quantizer the model holds, whatever the
method (IR-Net's EDE, RBNN, IE-Net, or an ``EdeSign`` put into another method's layers).
"""
from __future__ import annotations

import math
from typing import Callable

from torch import nn

__all__ = ["log_linear_temperature", "set_epoch_temperature", "start_epoch", "after_step_hooks", "surrogate_scale",
           "recu_tau", "fda_num_terms", "fda_noise_weight"]


def _check_epoch(epoch: int, epochs: int) -> None:
    if epochs <= 0:
        raise ValueError(f"epochs must be positive, got {epochs}")
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}")


def log_linear_temperature(epoch: int, epochs: int, tmin: float, tmax: float) -> float:
    r"""RBNN ``cpt_tk`` / IR-Net EDE temperature: log-linear from ``tmin`` (epoch 0) towards ``tmax``.

    .. math:: t(e) = 10^{\log_{10} T_{min} + (\log_{10} T_{max} - \log_{10} T_{min})\, e / E}

    ``t(E)`` would be ``tmax``; the last epoch ``E - 1`` gets slightly less (E=1000, 1e-2..10: 9.93).
    """
    _check_epoch(epoch, epochs)
    if tmin <= 0 or tmax <= 0:
        raise ValueError(f"Tmin and Tmax must be positive, got Tmin={tmin}, Tmax={tmax}")
    lo, hi = math.log10(tmin), math.log10(tmax)
    return 10.0 ** (lo + (hi - lo) * epoch / epochs)


def set_epoch_temperature(model: nn.Module, epoch: int, epochs: int, tmin: float = 0.1, tmax: float = 10.0) -> float:
    """Set ``t = log_linear_temperature(epoch, epochs, tmin, tmax)`` on every module of ``model``
    with ``set_temperature`` (call it at the start of each epoch); returns ``t``. The defaults
    are IR-Net's and seed 002's EDEHook range."""
    t = log_linear_temperature(epoch, epochs, tmin, tmax)
    for m in model.modules():
        if callable(getattr(m, "set_temperature", None)):
            m.set_temperature(t)
    return t


def start_epoch(model: nn.Module, epoch: int, epochs: int, tmin: float, tmax: float, *, resumed: bool = False) -> float:
    """The per-epoch protocol of every training loop, before the first batch of ``epoch``:
    :func:`set_epoch_temperature`, then ``on_epoch_start(epoch, epochs)`` on every module that has it
    (e.g. RBNN's rotation update), except when the epoch is ``resumed`` mid-way (they already ran,
    their effect is in the checkpoint). Returns the temperature ``t``."""
    t = set_epoch_temperature(model, epoch, epochs, tmin, tmax)
    if not resumed:
        for m in model.modules():
            if callable(getattr(m, "on_epoch_start", None)):
                m.on_epoch_start(epoch, epochs)
    return t


def after_step_hooks(model: nn.Module) -> list[Callable[[], None]]:
    """The ``after_step()`` of every module that has it (e.g. BNN's weight clipping): a training loop
    calls each after every optimizer step."""
    return [m.after_step for m in model.modules() if callable(getattr(m, "after_step", None))]


def surrogate_scale(t: float) -> float:
    """``k = max(1/t, 1)``: while ``t < 1``, ``k*t = 1`` keeps the surrogate's area/peak near an STE."""
    return max(1.0 / t, 1.0)


def recu_tau(epoch: int, epochs: int, tau_min: float = 0.85, tau_max: float = 0.99) -> float:
    r"""ReCU's clamp quantile: :math:`\tau(e) = A e^{e/E} + B`, :math:`A = (\tau_{max}-\tau_{min})/(\mathrm{e}-1)`,
    :math:`B = \tau_{min} - A`; from ``tau_min`` at epoch 0 towards ``tau_max`` at ``E``."""
    _check_epoch(epoch, epochs)
    a = (tau_max - tau_min) / (math.e - 1.0)
    return a * math.exp(epoch / epochs) + tau_min - a


def fda_num_terms(epoch: int, epochs: int) -> int:
    """FDA's index of the last Fourier term of the sign's backward: ``9 + floor(9 e / E)`` (9 -> 17)."""
    _check_epoch(epoch, epochs)
    return 9 + int(epoch / epochs * 9)


def fda_noise_weight(epoch: int, epochs: int) -> float:
    """FDA's weight of the noise-adaptation term: ``0.05 (1 + cos(pi (e+1) / E))``, 0 at the last epoch."""
    _check_epoch(epoch, epochs)
    return 0.05 * (1.0 + math.cos(math.pi * (epoch + 1) / epochs))
