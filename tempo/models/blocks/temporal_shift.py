"""Temporal shift (TSM, spec A2): move 1/fold_div of the channels one frame each way.

Input rows are frames of videos laid out as n·T + t. Channels [0, f) take the next
frame's values (last frame zero-filled), channels [f, 2f) the previous frame's (first
frame zero-filled), the rest stay. Zero fill, never circular; no parameters.
"""

from __future__ import annotations

import torch
from torch import nn


def temporal_shift(x: torch.Tensor, num_segments: int, fold_div: int = 8) -> torch.Tensor:
    nt, c, h, w = x.shape
    if nt % num_segments:
        raise ValueError(f"batch of {nt} frames is not a multiple of num_segments={num_segments}")
    v = x.view(nt // num_segments, num_segments, c, h, w)
    f = c // fold_div
    zero = v.new_zeros(v.shape[0], 1, f, h, w)
    from_next = torch.cat([v[:, 1:, :f], zero], dim=1)
    from_prev = torch.cat([zero, v[:, :-1, f : 2 * f]], dim=1)
    return torch.cat([from_next, from_prev, v[:, :, 2 * f :]], dim=2).view(nt, c, h, w)


class TemporalShift(nn.Module):
    def __init__(self, num_segments: int, fold_div: int = 8):
        super().__init__()
        self.num_segments = num_segments
        self.fold_div = fold_div

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return temporal_shift(x, self.num_segments, self.fold_div)

    def extra_repr(self) -> str:
        return f"num_segments={self.num_segments}, fold_div={self.fold_div}"
