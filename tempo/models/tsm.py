"""TSM: TSN whose backbone shifts 1/8 of the channels each way in time (spec A)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from tempo.models.backbones.resnet import ResNet
from tempo.models.tsn import TSN


class TSM(TSN):
    def __init__(self, backbone: Callable[..., ResNet], num_classes: int, num_segments: int = 8,
                 dropout: float = 0.5, partial_bn: bool = False, shift_fold_div: int = 8,
                 shift_every_n_blocks: int = 1, init_checkpoint: str | None = None):
        self.shift_fold_div = shift_fold_div
        self.shift_every_n_blocks = shift_every_n_blocks
        super().__init__(backbone, num_classes, num_segments, dropout, partial_bn, init_checkpoint)

    def backbone_kwargs(self) -> dict:
        return {"num_segments": self.num_segments, "shift_fold_div": self.shift_fold_div,
                "shift_every_n_blocks": self.shift_every_n_blocks}

    def forward(self, video: torch.Tensor) -> dict[str, torch.Tensor]:
        if video.shape[2] != self.num_segments:
            raise ValueError(f"{type(self).__name__} was built for {self.num_segments} segments but got a clip "
                             f"of {video.shape[2]} frames; set model.num_segments to the sampler's clip length")
        return super().forward(video)
