"""`Ensemble`: several trained networks scored as one (e.g. the TCM paper's 8f + 16f TCM_En).

Every member sees the same clip: the clip has the largest member's frame count and a member trained
with fewer frames takes every (T / T_m)-th frame of it. The members' softmax probabilities are averaged
(`reduce="prob"`, returned as their log so that a later softmax gives back that average) or their
logits (`reduce="score"`).
"""

from __future__ import annotations

import torch
from torch import nn


class Ensemble(nn.Module):
    def __init__(self, members: list[nn.Module], num_frames: list[int], reduce: str = "prob"):
        super().__init__()
        if reduce not in ("prob", "score"):
            raise ValueError(f"reduce must be 'prob' or 'score', got {reduce!r}")
        self.members = nn.ModuleList(members)
        self.num_frames = [int(t) for t in num_frames]
        self.reduce = reduce
        longest = max(self.num_frames)
        for t in self.num_frames:
            if longest % t:
                raise ValueError(f"ensemble members need frame counts that divide the largest ({longest}); "
                                 f"got {self.num_frames}")

    def forward(self, video: torch.Tensor) -> dict:
        total = video.shape[2]
        outputs = []
        for member, t in zip(self.members, self.num_frames, strict=True):
            step = total // t
            clip = video if step == 1 else video[:, :, step // 2::step]
            logits = member(clip)["logits"].float()
            outputs.append(logits.log_softmax(-1) if self.reduce == "prob" else logits)
        stacked = torch.stack(outputs)
        if self.reduce == "prob":
            return {"logits": stacked.exp().mean(0).clamp_min(1e-12).log()}
        return {"logits": stacked.mean(0)}
