"""TSN: a 2D ResNet applied per segment, averaged logits (segment consensus, spec A4)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from tempo.models.backbones.resnet import ResNet
from tempo.models.weights import init_from_checkpoint


class TSN(nn.Module):
    """Temporal Segment Network.

    `backbone` is a ResNet or a factory returning one (Hydra `_partial_`); frames are
    folded into the batch, each gives logits, and the video's logits are their mean
    over time (before softmax). `partial_bn` freezes every BatchNorm but the first in
    training (TSN's option, off by default). `init_checkpoint`: a tempo checkpoint or a released file
    (MMAction2, official TSM; `tempo.models.zoo`) initialising everything but `fc` (fine-tuning).
    """

    def __init__(self, backbone: Callable[..., ResNet] | ResNet, num_classes: int, num_segments: int = 8,
                 dropout: float = 0.5, partial_bn: bool = False, init_checkpoint: str | None = None):
        super().__init__()
        self.num_segments = num_segments
        self.backbone = backbone if isinstance(backbone, nn.Module) else backbone(**self.backbone_kwargs())
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(self.backbone.out_channels, num_classes)
        nn.init.xavier_uniform_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)
        self.partial_bn = partial_bn
        if init_checkpoint:
            init_from_checkpoint(self, init_checkpoint, hint="same backbone needed")

    def backbone_kwargs(self) -> dict:
        return {}

    def frame_logits(self, video: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) → per-frame logits (B, T, K)."""
        b, c, t, h, w = video.shape
        frames = video.transpose(1, 2).reshape(b * t, c, h, w)
        features = self.backbone(frames).mean(dim=(2, 3))
        return self.fc(self.dropout(features)).view(b, t, -1)

    def forward(self, video: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.frame_logits(video).mean(dim=1)}

    def train(self, mode: bool = True) -> TSN:
        super().train(mode)
        if mode and self.partial_bn:
            self._freeze_bn_after_first()
        return self

    def partial_bn_norms(self) -> list[nn.BatchNorm2d]:
        """The BNs partial BN freezes: every backbone BN but the first (stem). Modules inserted after a
        stage (`backbone.after_stage`, e.g. TCM) are excluded: they have no pretrained statistics."""
        inserted = getattr(self.backbone, "after_stage", None)
        skip = {id(m) for m in inserted.modules()} if inserted is not None else set()
        norms = [m for m in self.backbone.modules() if isinstance(m, nn.BatchNorm2d) and id(m) not in skip]
        return norms[1:]

    def _freeze_bn_after_first(self) -> None:
        for m in self.partial_bn_norms():
            m.eval()
            m.weight.requires_grad_(False)
            m.bias.requires_grad_(False)
