"""Losses: modules `(outputs: dict, labels) -> dict[str, Tensor]` with the total under
"loss" and every term under its own name (each is logged as train/loss_<name>)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CrossEntropy(nn.Module):
    def __init__(self, label_smoothing: float = 0.0):
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, outputs: dict, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        ce = F.cross_entropy(outputs["logits"].float(), labels, label_smoothing=self.label_smoothing)
        return {"loss": ce, "ce": ce}
