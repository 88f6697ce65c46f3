"""I3D / SlowOnly baseline: a 3D ResNet alone, global average pool → dropout → fc (spec C1 backbone).

With `backbone=resnet3d50` this is the SlowOnly-R50 32×2 network TPN and TDPN start from (conv1 of every
res4/res5 block (3,1,1), no temporal stride); `backbone.inflate_style=3x3x3` and an I3D inflate pattern give
the classic I3D. Weights: `backbone.pretrained=imagenet` inflates the 2D ImageNet ResNet (w2d / t per tap).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from tempo.models.backbones.resnet3d import ResNet3d
from tempo.models.weights import init_from_checkpoint

BACKBONES_3D = "backbone=resnet3d50 | resnet3d101 | resnet3d_tiny"


def build_3d_backbone(backbone: Callable[..., ResNet3d] | ResNet3d, model: str) -> ResNet3d:
    """Instantiate the backbone factory and check that it is a 3D ResNet (clips (B, C, T, H, W) end to end)."""
    net = backbone if isinstance(backbone, nn.Module) else backbone()
    if not isinstance(net, ResNet3d):
        raise ValueError(f"model={model} needs a 3D backbone ({BACKBONES_3D}); got {type(net).__name__}")
    return net


def classifier(in_features: int, num_classes: int) -> nn.Linear:
    """Linear head initialised N(0, 0.01), zero bias (spec C5)."""
    fc = nn.Linear(in_features, num_classes)
    nn.init.normal_(fc.weight, 0, 0.01)
    nn.init.zeros_(fc.bias)
    return fc


class I3D(nn.Module):
    """3D ResNet → global average pool over (T, H, W) → dropout → fc; `forward` returns {"logits"}.

    `init_checkpoint`: a tempo checkpoint initialising everything but `fc` (fine-tuning)."""

    def __init__(self, backbone: Callable[..., ResNet3d] | ResNet3d, num_classes: int, dropout: float = 0.5,
                 init_checkpoint: str | None = None):
        super().__init__()
        self.backbone = build_3d_backbone(backbone, "i3d")
        self.dropout = nn.Dropout(dropout)
        self.fc = classifier(self.backbone.out_channels, num_classes)
        if init_checkpoint:
            init_from_checkpoint(self, init_checkpoint, hint="same backbone needed")

    def forward(self, video: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.backbone(video).mean(dim=(2, 3, 4))
        return {"logits": self.fc(self.dropout(features))}
