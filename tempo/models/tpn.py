"""TPN: a 3D ResNet (SlowOnly) + temporal pyramid over its stages + TPN's auxiliary head (spec C4, C5).

The pyramid (``tempo.models.blocks.temporal_pyramid.TemporalPyramid``) reads the res stages listed in
``levels`` (default res2..res5 as TDPN's spec C4; TPN's own Kinetics model uses [4, 5]) and returns
(B, C_5, T', h, w); the main head pools it globally → dropout → fc. The auxiliary head (Conv3d (1,3,3)
stride 2 → pool → dropout → fc) reads the raw res4 output and runs in training only, so the network returns
``{"logits", "aux_logits"}`` in training and ``{"logits"}`` in eval; the loss is
CE(logits) + aux_weight·CE(aux_logits) (``tempo.run.losses.MultiTermLoss``). ``aux_weight: 0`` drops the head.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from tempo.models.backbones.resnet3d import ResNet3d
from tempo.models.blocks.temporal_pyramid import AuxiliaryHead, TemporalPyramid
from tempo.models.i3d import build_3d_backbone, classifier
from tempo.models.weights import init_from_checkpoint

RES_LEVELS = (2, 3, 4, 5)
AUX_RES = 4


def check_levels(levels: Sequence[int]) -> list[int]:
    values = [int(v) for v in levels]
    if len(values) < 2 or values != sorted(set(values)) or any(v not in RES_LEVELS for v in values):
        raise ValueError(f"model.network.levels={list(levels)}: give at least two increasing res numbers from "
                         f"{list(RES_LEVELS)} (default [2, 3, 4, 5]; TPN's Kinetics model [4, 5])")
    return values


class TPN(nn.Module):
    """3D ResNet → TemporalPyramid(levels) → GAP → dropout → fc, plus the training-only res4 auxiliary head.

    pyramid: factory (Hydra ``_partial_``) called with ``in_channels`` of the chosen levels; its options
    (``flow``, ``ssm_groups``, ``trm_rates`` …) live in ``model.network.pyramid``.
    """

    def __init__(self, backbone: Callable[..., ResNet3d] | ResNet3d, num_classes: int,
                 pyramid: Callable[..., TemporalPyramid] | None = None, levels: Sequence[int] = RES_LEVELS,
                 dropout: float = 0.5, aux_weight: float = 0.5, aux_dropout: float = 0.5,
                 init_checkpoint: str | None = None):
        super().__init__()
        self.backbone = build_3d_backbone(backbone, "tpn")
        self.levels = check_levels(levels)
        channels = [self.backbone.stage_channels[r - 2] for r in self.levels]
        self.pyramid = (pyramid or TemporalPyramid)(in_channels=channels)
        self.dropout = nn.Dropout(dropout)
        self.fc = classifier(self.pyramid.out_channels, num_classes)
        self.aux_head = None
        if aux_weight > 0:
            self.aux_head = AuxiliaryHead(self.backbone.stage_channels[AUX_RES - 2], num_classes, aux_dropout)
        if init_checkpoint:
            init_from_checkpoint(self, init_checkpoint, skip=("fc.", "aux_head.fc."),
                                 hint="same backbone, levels and pyramid options needed")

    def forward(self, video: torch.Tensor) -> dict[str, torch.Tensor]:
        stages = self.backbone.forward_stages(video)
        fused = self.pyramid([stages[r - 2] for r in self.levels])
        outputs = {"logits": self.fc(self.dropout(fused.mean(dim=(2, 3, 4))))}
        if self.training and self.aux_head is not None:
            outputs["aux_logits"] = self.aux_head(stages[AUX_RES - 2])
        return outputs
