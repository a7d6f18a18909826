"""Training losses: cross-entropy with optional label smoothing and mixup."""
from __future__ import annotations

import torch
import torch.nn.functional as F


class ClassificationLoss:
    """``CE(logits, y)`` with label smoothing ``eps``; with mixup ``alpha > 0`` the batch is
    mixed with a shuffled copy, ``lam ~ Beta(alpha, alpha)``, and the loss is
    ``lam * CE(a) + (1 - lam) * CE(b)`` (Zhang et al. 2018; RBNN's ``--mixup``)."""

    def __init__(self, label_smoothing: float = 0.0, mixup: float = 0.0):
        self.label_smoothing = label_smoothing
        self.mixup = mixup

    def mix(self, images: torch.Tensor, labels: torch.Tensor):
        """Return ``(images, labels_a, labels_b, lam)``; without mixup ``lam = 1``."""
        if self.mixup <= 0:
            return images, labels, labels, 1.0
        lam = float(torch.distributions.Beta(self.mixup, self.mixup).sample())
        perm = torch.randperm(images.shape[0], device=images.device)
        return lam * images + (1 - lam) * images[perm], labels, labels[perm], lam

    def __call__(self, logits, labels_a, labels_b=None, lam: float = 1.0) -> torch.Tensor:
        loss = F.cross_entropy(logits, labels_a, label_smoothing=self.label_smoothing)
        if lam < 1.0:
            loss = lam * loss + (1 - lam) * F.cross_entropy(logits, labels_b, label_smoothing=self.label_smoothing)
        return loss
