r"""Knowledge distillation: losses, a frozen teacher, and forward hooks for intermediate features.

Losses (ReActNet, Real-to-Binary, Hinton et al.'s KD):

* **distributional** (ReActNet): cross-entropy against the teacher's softmax,
  :math:`\frac1N\sum_n -\sum_c \mathrm{softmax}(z_T)_c \log\mathrm{softmax}(z_S)_c`, at
  temperature 1. It differs from :math:`KL(p_T\|p_S)` by the teacher's entropy, a constant,
  so the gradients are KL's. ReActNet trains with this loss only (no label term).
* **kd** (Hinton et al. 2015): :math:`T^2\,KL(\mathrm{softmax}(z_T/T)\,\|\,\mathrm{softmax}(z_S/T))`,
  averaged over the batch; the :math:`T^2` keeps the gradient scale independent of ``T``.
* **ce+kd**: :math:`(1-\alpha)\,CE(z_S, y) + \alpha\,KD_T` (Hinton's weighted average).
* **attention matching** (Real-to-Binary), added to any of the above with weight
  ``at_weight``: for each transfer point ``j`` with features :math:`A \in R^{N\times C\times H\times W}`,
  :math:`q = \mathrm{vec}(\mathrm{mean}_c A^2) / \|\cdot\|_2` (L2 normalisation, as the
  paper and the authors' HCEBN code; larq and mmcls divide by the max instead), and
  :math:`L_{AT} = \sum_j \mathrm{mean}_{n,\,hw}(q_S^j - q_T^j)^2`. With this reduction the
  authors' code uses ``at_weight = 1e3``.

The published recipes: ReActNet is ``DistillationLoss("distributional")``. Real-to-Binary's
``CE + 3 KD + w AT`` is 4 x ``DistillationLoss("ce+kd", alpha=0.75, at_weight=w / 4)``; its
AT weight depends on the normalisation (1e3 in the authors' L2 form used here, 30 in larq's
and mmcls's max-normalised form, which is a different scale).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from onebit.utils import suggest

__all__ = [
    "distributional_loss", "kd_loss", "attention_map", "attention_loss",
    "DistillationLoss", "FeatureHooks", "Teacher", "block_names",
]

KINDS = ("distributional", "kd", "ce+kd")


def distributional_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """ReActNet's distributional loss; the teacher receives no gradient."""
    soft_targets = F.softmax(teacher_logits.detach(), dim=1)
    return -(soft_targets * F.log_softmax(student_logits, dim=1)).sum(dim=1).mean()


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Hinton's ``T^2 KL(p_T || p_S)`` at temperature ``T``, mean over the batch."""
    t = float(temperature)
    log_p_teacher = F.log_softmax(teacher_logits.detach() / t, dim=1)
    log_p_student = F.log_softmax(student_logits / t, dim=1)
    return t * t * F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)


def attention_map(features: torch.Tensor) -> torch.Tensor:
    """``[N, C, H, W]`` features -> ``[N, H*W]`` L2-normalised ``mean_c(A^2)`` (Real-to-Binary's attention map)."""
    return F.normalize(features.pow(2).mean(dim=1).flatten(1), dim=1)


def attention_loss(student_feats: Sequence[torch.Tensor], teacher_feats: Sequence[torch.Tensor]) -> torch.Tensor:
    """Sum over transfer points of the mean squared difference of the attention maps."""
    if len(student_feats) != len(teacher_feats) or not student_feats:
        raise ValueError(
            f"attention matching pairs student and teacher features one to one: got {len(student_feats)} "
            f"student and {len(teacher_feats)} teacher feature maps"
        )
    total = 0.0
    for j, (s, t) in enumerate(zip(student_feats, teacher_feats)):
        if s.shape[0] != t.shape[0] or s.shape[2:] != t.shape[2:]:
            raise ValueError(
                f"transfer point {j}: student features {tuple(s.shape)} and teacher features {tuple(t.shape)} "
                "need the same batch size and spatial size"
            )
        total = total + (attention_map(s) - attention_map(t.detach())).pow(2).mean()
    return total


class DistillationLoss(nn.Module):
    """The training criterion with a teacher: see the module docstring for the formulas.

    ``loss = criterion(student_logits, targets, teacher_logits, student_feats, teacher_feats)``;
    ``alpha`` is used by ``"ce+kd"`` only, ``temperature`` by ``"kd"`` and ``"ce+kd"``;
    ``at_weight > 0`` adds attention matching and then needs both feature lists.
    """

    def __init__(self, kind: str = "distributional", temperature: float = 1.0, alpha: float = 0.5,
                 at_weight: float = 0.0):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"unknown distillation loss {kind!r}{suggest(kind, KINDS)}")
        if temperature <= 0:
            raise ValueError(f"the distillation temperature must be positive, got {temperature}")
        if kind == "distributional" and temperature != 1.0:
            raise ValueError("the distributional loss is defined at temperature 1; use kind='kd' for T != 1")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha weighs KD against CE and must lie in [0, 1], got {alpha}")
        if at_weight < 0:
            raise ValueError(f"at_weight must be >= 0, got {at_weight}")
        self.kind = kind
        self.temperature, self.alpha, self.at_weight = float(temperature), float(alpha), float(at_weight)

    def forward(self, student_logits, targets, teacher_logits, student_feats=None, teacher_feats=None) -> torch.Tensor:
        if self.kind == "distributional":
            loss = distributional_loss(student_logits, teacher_logits)
        elif self.kind == "kd":
            loss = kd_loss(student_logits, teacher_logits, self.temperature)
        else:
            loss = (1 - self.alpha) * F.cross_entropy(student_logits, targets) + self.alpha * kd_loss(
                student_logits, teacher_logits, self.temperature)
        if self.at_weight > 0:
            if student_feats is None or teacher_feats is None:
                raise ValueError("at_weight > 0 needs student_feats and teacher_feats (see FeatureHooks)")
            loss = loss + self.at_weight * attention_loss(student_feats, teacher_feats)
        return loss

    def extra_repr(self) -> str:
        return (f"kind={self.kind!r}, temperature={self.temperature:g}, alpha={self.alpha:g}, "
                f"at_weight={self.at_weight:g}")


def block_names(model: nn.Module) -> list[str]:
    """The residual blocks ``layer<i>.<j>`` of a ResNet-style model, in forward order.

    Names match between torchvision ResNets and onebit's ``ResArch`` models, whose blocks
    are the Real-to-Binary transfer points (one per two binary convolutions)."""
    return [n for n, _ in model.named_modules() if re.fullmatch(r"layer\d+\.\d+", n)]


class FeatureHooks:
    """Forward hooks keeping the latest output of named sub-modules.

    ``hooks = FeatureHooks(model, block_names(model)); model(x); feats = hooks.outputs()``.
    Every forward overwrites the stored outputs, so a feature list always comes from one
    forward pass (mmcls appends and can pair stale features after an evaluation).
    """

    def __init__(self, model: nn.Module, names: Sequence[str]):
        modules = dict(model.named_modules())
        unknown = [n for n in names if n not in modules]
        if unknown:
            raise ValueError(
                f"no sub-module named {unknown[0]!r} in {type(model).__name__}{suggest(unknown[0], modules)}")
        self.names = list(names)
        self._outputs: dict[str, torch.Tensor] = {}
        self._handles = [modules[n].register_forward_hook(self._keeper(n)) for n in self.names]

    def _keeper(self, name: str):
        def hook(module, inputs, output):
            self._outputs[name] = output

        return hook

    def outputs(self) -> list[torch.Tensor]:
        """The outputs of the hooked modules in the order of ``names``."""
        missing = [n for n in self.names if n not in self._outputs]
        if missing:
            raise RuntimeError(f"module {missing[0]!r} has not run yet: call the model before reading its features")
        return [self._outputs[n] for n in self.names]

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles, self._outputs = [], {}


class Teacher(nn.Module):
    """A frozen teacher: always in eval mode (BN uses its running statistics), no
    parameter requires a gradient, and the forward runs under ``torch.no_grad()``.

    ``feature_layers`` names sub-modules whose outputs ``features()`` returns after a
    forward (for attention matching).
    """

    def __init__(self, model: nn.Module, feature_layers: Sequence[str] = ()):
        super().__init__()
        self.model = model.requires_grad_(False)
        self.hooks = FeatureHooks(model, feature_layers) if feature_layers else None
        self.train(False)

    def train(self, mode: bool = True) -> "Teacher":
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.model(x)

    def features(self) -> list[torch.Tensor]:
        if self.hooks is None:
            raise ValueError("this teacher was built without feature_layers")
        return self.hooks.outputs()

    @classmethod
    def from_checkpoint(cls, name: str, checkpoint: str | Path | dict, num_classes: int,
                        feature_layers: Sequence[str] = (), **create_kwargs) -> "Teacher":
        """Build model ``name`` and load ``checkpoint`` into it strictly.

        ``name`` is a registered onebit model (``create_kwargs`` go to ``create_model``, e.g.
        ``binary_type=(False, False)`` for a full-precision teacher) or ``"torchvision:<arch>"``
        (e.g. ``torchvision:resnet34``, ReActNet's teacher). ``checkpoint`` is a path to an onebit
        checkpoint or a bare state_dict, or an already loaded dict of either kind.
        """
        from onebit.models.checkpoint import load_model_state
        from onebit.train.stages import read_checkpoint

        if name.startswith("torchvision:"):
            import torchvision

            model = torchvision.models.get_model(name.split(":", 1)[1], weights=None, num_classes=num_classes)
        else:
            from onebit.models import create_model

            model = create_model(name, num_classes, **create_kwargs)
        load_model_state(model, read_checkpoint(checkpoint))
        return cls(model, feature_layers)

