"""The weight initialisations of the reference model definitions, by name.

* ``"rbnn_imagenet"``: RBNN's ``models_imagenet`` ResNets: ``kaiming_normal_`` (fan-in,
  gain sqrt 2) on every convolution, binary ones included; every ``BatchNorm2d`` starts at
  gamma = 1e-8, beta = 0, so each residual branch starts near 0.
* ``"rbnn_cifar"``: the same, and the classifier's weights drawn with ``kaiming_normal_``
  too (RBNN's ``models_cifar`` ResNets).
* ``"fan_out"``: IR-Net's ImageNet files and mmcls ``ResArch``: convolutions
  N(0, sqrt(2 / (k^2 C_out))) (= kaiming fan-out), BN 1/0, classifier N(0, 0.01) and bias 0.
* ``"kaiming"``: RBNN's MobileNets: ``kaiming_normal_`` on convolutions and the classifier,
  BN left at PyTorch's 1/0.
* ``"default"``: PyTorch's own initialisation.
"""
from __future__ import annotations

from torch import nn

INITS = ("rbnn_cifar", "rbnn_imagenet", "fan_out", "kaiming", "default")


def init_weights(model: nn.Module, scheme: str, classifier: nn.Linear | None = None) -> nn.Module:
    """Initialise ``model``'s convolutions and BatchNorms in place with the named scheme, and
    ``classifier`` (the final ``nn.Linear``, when the reference initialises it) too. Other
    linear layers (e.g. channel gates) keep PyTorch's initialisation."""
    if scheme not in INITS:
        raise ValueError(f"unknown init {scheme!r} (choose from: {', '.join(INITS)})")
    rbnn = scheme in ("rbnn_cifar", "rbnn_imagenet")
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            if rbnn or scheme == "kaiming":
                nn.init.kaiming_normal_(m.weight)
            elif scheme == "fan_out":
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d) and (rbnn or scheme == "fan_out"):
            nn.init.constant_(m.weight, 1e-8 if rbnn else 1.0)
            nn.init.zeros_(m.bias)
    if classifier is not None and scheme in ("rbnn_cifar", "kaiming"):
        nn.init.kaiming_normal_(classifier.weight)
    elif classifier is not None and scheme == "fan_out":
        nn.init.normal_(classifier.weight, 0, 0.01)
        nn.init.zeros_(classifier.bias)
    return model
