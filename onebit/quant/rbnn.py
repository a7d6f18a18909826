r"""RBNN, Rotated Binary Neural Network (Lin et al., NeurIPS 2020, arXiv:2009.13055), as its
official code (lmbxmu/RBNN ``modules/binarized_modules.py``) trains it.

Weights (:class:`RbnnWeight`), per layer with ``n = C_in k_h k_w = a b`` (:func:`get_ab`):

1. ``W2 = standardize(W)`` per output channel (unbiased std);
2. ``Wr_c = R1^T X_c R2`` with ``X = W2.view(C_out, a, b)`` and one pair of orthogonal
   matrices ``R1`` (a x a), ``R2`` (b x b) shared by the layer's filters; no gradient flows
   through the rotation;
3. the adjustable rotated weight ``W3 = W2 + |sin theta| (Wr - W2)``, ``theta`` learnable per
   output channel, initialised to pi/2;
4. ``sign(W3)`` forward, training-aware surrogate backward (:func:`training_aware_grad`, with
   ``k = max(1/t, 1)``); the layer multiplies its output by the learnable per-channel scale
   ``alpha`` (the quantizer's ``output_gain``), as the reference does after its convolution.

Activations (:class:`RbnnInput`): standardised per sample over (C, H, W) (train and eval;
the forward is then ``sign(x - mean_sample(x))``), binarized with the same surrogate at
``k = 1, t = max(t, 1)``; ``a32=True`` keeps the standardised real values (W1A32).
Once ``t > 1`` this surrogate's gain (peak ``sqrt(2) t``) compounds over the binary layers on
the way back: the stem's gradient grows ~500x at ``t = 2.5`` and ~5e7x at ``t = 10`` (measured,
BENCHMARKS.md "Methods"). The 1000-epoch schedule reaches ``t = 1`` at two thirds of training;
a schedule compressed into a few epochs collapses there, so cap ``--Tmax`` at 1 for short runs.

The rotations are updated once per epoch, outside the forward pass (the reference does it
inside the forward of the epoch's first batch, with the same weights): three alternating
Procrustes iterations (:func:`bi_rotation`), vectorised over the output channels.

Where this implementation deliberately differs from the reference code (same maths):

* the initial rotations are Haar-random from torch's RNG (seeded by ``--seed``), not from
  SciPy's unseeded ``ortho_group``; the update uses ``sign(0) = +1``.

The theta lock: in float32 ``sin(pi/2) == 1`` exactly, so at initialisation ``W3 = Wr`` and
the latent weights receive exactly zero gradient (``1 - |sin theta| = 0``); ``d/dtheta`` is
~1e-7. What unlocks training in the reference is SGD weight decay on theta (every parameter
is decayed, 1e-4), which pulls theta below pi/2 over the first epochs. Keep weight decay on
theta to reproduce the published runs: exempting theta from decay with this initialisation
leaves the latent weights frozen. ``theta_init="uniform"`` (U(0, pi/2), the reference code
before 2020-05-28) is the alternative that does not lock.
"""
from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import nn

from onebit.quant import kernels
from onebit.quant.base import Quantizer, register_quantizer
from onebit.quant.functional import channel_mean_abs, channel_shape, sign, sign_, standardize, training_aware_grad
from onebit.quant.owner import LayerBoundQuantizer
from onebit.quant.schedules import surrogate_scale

__all__ = ["get_ab", "random_orthogonal", "rotation_objective", "bi_rotation", "RbnnWeight", "RbnnInput"]

ROTATION_ITERATIONS = 3
"""Alternating (B, R1, R2) iterations per update, hard-coded in the reference."""
SQRT2 = math.sqrt(2.0)


def get_ab(n: int) -> tuple[int, int]:
    """``(a, b)`` with ``a * b = n``, ``a`` the largest divisor of ``n`` not above ``sqrt(n)``."""
    if n < 1:
        raise ValueError(f"get_ab needs a positive size, got {n}")
    for a in range(math.isqrt(n), 0, -1):
        if n % a == 0:
            return a, n // a
    raise AssertionError("unreachable: 1 divides every n")


def random_orthogonal(n: int) -> torch.Tensor:
    """A Haar-distributed random ``n x n`` orthogonal matrix (QR of a Gaussian with the signs of
    ``diag(R)`` fixed, Mezzadri 2007), drawn from torch's global RNG, in float32."""
    q, r = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64))
    return (q * torch.sign(torch.diagonal(r))).float()


def rotation_objective(x: torch.Tensor, r1: torch.Tensor, r2: torch.Tensor) -> torch.Tensor:
    """``sum_c tr(B_c^T R1^T X_c R2)`` at its best ``B = sign(R1^T X R2)``, i.e. ``sum |R1^T X R2|``:
    how close the rotated filters are to their binary vertices (RBNN's objective, to maximise)."""
    return (r1.t() @ x @ r2).abs().sum()


def bi_rotation(
    x: torch.Tensor, r1: torch.Tensor, r2: torch.Tensor, iterations: int = ROTATION_ITERATIONS
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""RBNN's alternating update of the bi-rotation, for all output channels at once.

    ``x`` is ``(C, a, b)``: the standardised filters reshaped. Each iteration:

    1. ``B_c = sign(R1^T X_c R2)``;
    2. ``D1 = sum_c B_c R2^T X_c^T = U1 S1 V1^T``, ``R1 = V1 U1^T`` (orthogonal Procrustes);
    3. ``D2 = sum_c X_c^T R1 B_c = U2 S2 V2^T`` (with the new ``R1``), ``R2 = U2 V2^T``.

    Each step maximises ``sum_c tr(B_c^T R1^T X_c R2)`` over one variable, so
    :func:`rotation_objective` never decreases. The sums over channels are single
    contractions (no loop over channels); SVDs run on ``x``'s device.
    """
    for _ in range(iterations):
        b = sign(r1.t() @ x @ r2)
        d1 = torch.einsum("cij,ckj->ik", b, x @ r2)
        u1, _, vh1 = torch.linalg.svd(d1)
        r1 = (u1 @ vh1).t()
        d2 = torch.einsum("cij,cik->jk", x, r1 @ b)
        u2, _, vh2 = torch.linalg.svd(d2)
        r2 = u2 @ vh2
    return r1, r2


class _RotatedSign(torch.autograd.Function):
    r"""RBNN's weight path in one autograd node (the formulas of the module docstring):

    forward ``sign(W3)``, ``W3 = W2 + s (Wr - W2)``, ``s = |sin theta|``,
    ``Wr = R1^T X R2`` (no gradient), ``W2 = standardize(W)``; backward, with
    ``g3 = F'(W3) * grad`` (``F'`` = :func:`training_aware_grad`; ``alpha`` is applied to the
    layer's output, so autograd puts it into ``grad``):

    * ``dL/dtheta = sign(sin theta) cos theta * sum g3 * (Wr - W2)`` per channel;
    * ``dL/dW2 = (1 - s) g3``, exactly 0 at ``s = 1`` (the theta lock), then through the
      standardisation's Jacobian ``(g - mean g - W2 sum(g W2) / (n - 1)) / std``.

    Same values as autograd through the composition (tested), in a third of the kernel
    launches, which is what a small layer's step time is made of.
    """

    @staticmethod
    def forward(ctx, w, theta, r1, r2, k, t):
        co, n = w.shape[0], w[0].numel()
        a, b = r1.shape[0], r2.shape[0]
        std, mean = torch.std_mean(w.reshape(co, n), dim=1, keepdim=True)
        w2 = (w.reshape(co, n) - mean).div_(std)
        delta = (r1.t() @ w2.view(co, a, b) @ r2).view(co, n).sub_(w2)  # Wr - W2
        w3 = w2 + theta.view(co, 1).sin().abs_() * delta
        bits = sign_(w3.clone())
        ctx.save_for_backward(w2, w3, delta, std, theta, k, t)
        return bits.view_as(w)

    @staticmethod
    def backward(ctx, grad_output):
        w2, w3, delta, std, theta, k, t = ctx.saved_tensors
        co, n = w2.shape
        g3 = training_aware_grad(w3, k, t).mul_(grad_output.reshape(co, n))
        sin = theta.view(co, 1).sin()
        d_theta = ((g3 * delta).sum(1, keepdim=True) * sin.sign() * theta.view(co, 1).cos()).view_as(theta)
        g2 = g3.mul_(1.0 - sin.abs())
        g_dot_w2 = (g2 * w2).sum(1, keepdim=True).div_(n - 1)
        d_w = g2.sub_(g2.mean(1, keepdim=True)).sub_(w2 * g_dot_w2).div_(std)
        return d_w.view_as(grad_output), d_theta, None, None, None, None


@register_quantizer("rbnn_weight")
class RbnnWeight(LayerBoundQuantizer):
    """RBNN's weight binarization (see the module docstring).

    Args:
        rotation_update: update the rotations at the start of epochs ``e`` with
            ``e % rotation_update == 0`` (``--rotation_update``, default 1: every epoch).
        use_gpu: run the update's SVDs on CUDA when available (``--use_gpu``); default the
            CPU, which the RBNN authors measured faster for these small matrices.
        theta_init: ``"half_pi"`` (reference, locks the latent weights until weight decay
            moves theta) or ``"uniform"`` (U(0, pi/2), no lock).

    State (all in ``state_dict``): buffers ``R1``, ``R2``; parameters ``theta``, ``alpha``.
    ``t``/``k`` are non-persistent buffers the engine sets every epoch.
    """

    def __init__(self, rotation_update: int = 1, use_gpu: bool = False, theta_init: str = "half_pi"):
        super().__init__()
        if int(rotation_update) < 1:
            raise ValueError(f"rotation_update is a period in epochs (>= 1), got {rotation_update}")
        if theta_init not in ("half_pi", "uniform"):
            raise ValueError(f"theta_init must be 'half_pi' or 'uniform', got {theta_init!r}")
        self.rotation_update = int(rotation_update)
        self.use_gpu = bool(use_gpu)
        self.theta_init = theta_init
        self.register_buffer("t", torch.tensor(0.1), persistent=False)  # reference placeholders,
        self.register_buffer("k", torch.tensor(10.0), persistent=False)  # replaced every epoch

    def build(self, layer: nn.Module) -> None:
        super().build(layer)
        w = layer.weight.detach()
        self.a, self.b = get_ab(w[0].numel())
        self.register_buffer("R1", random_orthogonal(self.a).to(w.device))
        self.register_buffer("R2", random_orthogonal(self.b).to(w.device))
        shape = channel_shape(w)
        if self.theta_init == "half_pi":
            theta = torch.full(shape, math.pi / 2, device=w.device)
        else:
            theta = torch.rand(shape, device=w.device) * (math.pi / 2)
        self.theta = nn.Parameter(theta)
        # mean |W| of the layer's *default* init (build runs before the model's own init)
        self.alpha = nn.Parameter(channel_mean_abs(w).clone())

    def set_temperature(self, t: float) -> None:
        self.t.fill_(t)
        self.k.fill_(surrogate_scale(t))

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        # Under DDP the update runs once, on rank 0, and the engine broadcasts R1, R2 (the
        # reference's DataParallel replicas update copies that are then thrown away).
        if epoch % self.rotation_update == 0 and (not dist.is_initialized() or dist.get_rank() == 0):
            self.update_rotation()

    @torch.no_grad()
    def update_rotation(self) -> None:
        """Three alternating iterations from the layer's current weights, in float32."""
        device = torch.device("cuda") if self.use_gpu and torch.cuda.is_available() else torch.device("cpu")
        w = self.layer.weight.detach()
        x = standardize(w.to(device, torch.float32)).reshape(w.shape[0], self.a, self.b)
        r1, r2 = bi_rotation(x, self.R1.to(device, torch.float32), self.R2.to(device, torch.float32))
        self.R1.copy_(r1)
        self.R2.copy_(r2)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return _RotatedSign.apply(w, self.theta, self.R1, self.R2, self.k, self.t)

    def output_gain(self) -> torch.Tensor:
        return self.alpha

    def extra_repr(self) -> str:
        return f"rotation_update={self.rotation_update}, use_gpu={self.use_gpu}, theta_init={self.theta_init!r}"


class _StandardizedSign(torch.autograd.Function):
    r"""RBNN's activation path fused: ``sign(y)`` with ``y = (x - mu) / s`` per sample (unbiased
    ``s``) forward, :func:`training_aware_grad` of ``y`` through the standardisation backward.

    The forward needs neither ``s`` nor ``y`` (``sign(y) = sign(x - mu)``); the backward
    works on ``d = x - mu`` and applies the surrogate and the Jacobian of the standardisation
    in closed form (``m`` values per sample, ``g'`` the surrogate-weighted gradient):

    .. math:: \partial L/\partial x = (g' - \overline{g'} - y\,\textstyle\sum g' y / (m - 1)) / s

    Same values as autograd through ``standardize`` then ``sign_with_surrogate`` (tested),
    with about half the passes over the activation tensor.
    """

    @staticmethod
    def forward(ctx, x, k, t):
        mean = x.mean(tuple(range(1, x.dim())), keepdim=True)
        ctx.save_for_backward(x, mean, k, t)
        return sign_(x - mean)

    @staticmethod
    def backward(ctx, grad_output):
        x, mean, k, t = ctx.saved_tensors
        n, m = x.shape[0], x[0].numel()
        view = (n,) + (1,) * (x.dim() - 1)
        d = (x - mean).contiguous()
        flat_d = d.view(n, m)
        inv_std = torch.linalg.vector_norm(flat_d, dim=1).reciprocal_().mul_(math.sqrt(m - 1))  # 1 / s
        # g' = grad * k max(0, sqrt2 t - t^2 |d| / s)   (training_aware_grad of y = d / s)
        g = d.abs().mul_((inv_std * (-k * t * t)).view(view)).add_(k * SQRT2 * t).clamp_min_(0.0).mul_(grad_output)
        flat_g = g.view(n, m)
        g_mean = flat_g.mean(1)
        g_dot_d = torch.bmm(flat_g.unsqueeze(1), flat_d.unsqueeze(2)).view(n)
        # (g' - mean(g') - y sum(g' y) / (m - 1)) / s with y = d / s, in d's memory
        d.mul_((g_dot_d * inv_std.pow(3)).div_(-(m - 1)).view(view)).sub_((g_mean * inv_std).view(view))
        return d.addcmul_(g, inv_std.view(view)), None, None


FUSED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
"""Input dtypes the compiled kernel takes (computed in float32; autocast hands it bfloat16)."""


@torch.library.custom_op("onebit::rbnn_standardized_sign", mutates_args=(), device_types="cpu")
def _fused_standardized_sign(x: torch.Tensor, k: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:class:`_StandardizedSign` in the compiled kernel (``onebit.quant.kernels``): ``(sign(x - mean), mean)``,
    one opaque op to ``torch.compile``."""
    out, mean = kernels.standardized_sign_forward(kernels.sample_major(x).float())
    return out.to(x.dtype), mean


@_fused_standardized_sign.register_fake
def _(x, k, t):
    return torch.empty_like(kernels.sample_major(x)), x.new_empty(x.shape[0], dtype=torch.float32)


@torch.library.custom_op("onebit::rbnn_standardized_sign_backward", mutates_args=(), device_types="cpu")
def _fused_standardized_sign_backward(grad: torch.Tensor, x: torch.Tensor, mean: torch.Tensor, k: torch.Tensor,
                                      t: torch.Tensor) -> torch.Tensor:
    x32 = kernels.sample_major(x).float()
    grad32 = grad.float() if grad.stride() == x32.stride() else torch.empty_like(x32).copy_(grad)
    return kernels.standardized_sign_backward(grad32, x32, mean, float(k), float(t)).to(x.dtype)


@_fused_standardized_sign_backward.register_fake
def _(grad, x, mean, k, t):
    return torch.empty_like(kernels.sample_major(x))


def _fused_setup_context(ctx, inputs, output):
    x, k, t = inputs
    ctx.save_for_backward(x, output[1], k, t)


def _fused_backward(ctx, grad_output, grad_mean):
    x, mean, k, t = ctx.saved_tensors
    return _fused_standardized_sign_backward(grad_output, x, mean, k, t), None, None


_fused_standardized_sign.register_autograd(_fused_backward, setup_context=_fused_setup_context)


@register_quantizer("rbnn_input")
class RbnnInput(Quantizer):
    """RBNN's activation binarization: per-sample standardisation, then sign with the
    training-aware surrogate at ``k = 1, t = max(t, 1)``.

    Args:
        a32: keep the standardised activations real (``--a32``, W1A32 as in the reference).

    :meth:`use_fused_kernel` switches a quantizer to the compiled kernel (on CPU tensors of
    :data:`FUSED_DTYPES`; the torch-op code otherwise): the training default path does, ``--eager`` does not.
    """

    def __init__(self, a32: bool = False):
        super().__init__()
        self.a32 = bool(a32)
        self.fused = False
        self.register_buffer("t", torch.tensor(1.0), persistent=False)
        self.register_buffer("k", torch.tensor(1.0), persistent=False)

    @property
    def precision(self) -> int:  # type: ignore[override]
        return 32 if self.a32 else 1

    def set_temperature(self, t: float) -> None:
        self.t.fill_(max(t, 1.0))

    def use_fused_kernel(self, enabled: bool = True) -> bool:
        """Binarize with the compiled kernel when ``enabled`` and it is built; returns whether it is used."""
        self.fused = bool(enabled) and not self.a32 and kernels.available()
        return self.fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.a32:
            return standardize(x)
        if self.fused and x.device.type == "cpu" and x.dtype in FUSED_DTYPES:
            return _fused_standardized_sign(x, self.k, self.t)[0]
        return _StandardizedSign.apply(x, self.k, self.t)

    def export_threshold(self) -> str:
        return "sample_mean"  # sign(x - mean): the standardisation's division does not change the sign

    def extra_repr(self) -> str:
        return f"a32={self.a32}"
