"""Weight initialisation shared by the ResNet-style networks."""

from __future__ import annotations

from torch import nn


def kaiming_conv_unit_bn(model: nn.Module, conv_types: tuple[type, ...], norm_types: tuple[type, ...]) -> None:
    """He (fan_out, ReLU) initialisation for the given conv types, BN γ = 1 and β = 0 (torchvision's ResNet rule).
    Only the named types are touched, so blocks with their own init (e.g. TCM's Conv1d) keep it."""
    for m in model.modules():
        if isinstance(m, conv_types):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, norm_types):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
