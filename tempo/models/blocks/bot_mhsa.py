"""BoTNet multi-head self-attention with 2D relative-position logits, applied per frame (TDPN res5, spec C1/O4).

A BoT block replaces the 1×3×3 conv of a res5 bottleneck by ``BoTSelfAttention``: every frame of the clip
(B·T frames as batch) attends over its own H·W positions, so frames never mix (joint T·H·W attention would
cost T× more). For query p = (y, x) and key p' = (y', x'):

    logit(p → p') = (q_p / √d) · k_p' + (q_p / √d) · (r^H[y' − y + H − 1] + r^W[x' − x + W − 1])

with q, k, v 1×1 projections (no bias, N(0, 0.01)), d = channels / heads, and the relative tables
r^H ∈ R^{(2H−1)×d}, r^W ∈ R^{(2W−1)×d} shared by the heads (N(0, d^−½)). Softmax over the H·W keys, heads
concatenated. With ``stride=2`` (the first res5 block) the attended map is average-pooled (1, 2, 2) after
attention, as BoTNet does. The tables fix H × W at construction (the input size decides it); in eval mode a
map of another size (fully convolutional testing, e.g. 256² crops of a 224²-trained net) gets tables
resized by linear interpolation (offset 0 stays at the centre, the extremes at the ends — as ViT resizes
its position embeddings); in training a size mismatch is an error.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def relative_index(size: int, device: torch.device | None = None) -> torch.Tensor:
    """(size, size) table of j − i + size − 1: the row of r for query i and key j."""
    pos = torch.arange(size, device=device)
    return pos[None, :] - pos[:, None] + size - 1


class BoTSelfAttention(nn.Module):
    """Per-frame MHSA with 2D relative positions: (B, C, T, H, W) → (B, C, T, ⌈H/stride⌉, ⌈W/stride⌉)."""

    def __init__(self, channels: int, height: int, width: int, heads: int = 4, stride: int = 1):
        super().__init__()
        if channels % heads:
            raise ValueError(f"BoT MHSA: channels {channels} not divisible by heads {heads} "
                             "(model.network.mhsa_heads)")
        if stride not in (1, 2):
            raise ValueError(f"BoT MHSA: stride must be 1 or 2, got {stride}")
        self.channels, self.heads, self.head_dim = channels, heads, channels // heads
        self.height, self.width, self.stride = height, width, stride
        self.query = nn.Conv2d(channels, channels, 1, bias=False)
        self.key = nn.Conv2d(channels, channels, 1, bias=False)
        self.value = nn.Conv2d(channels, channels, 1, bias=False)
        self.rel_height = nn.Parameter(torch.empty(2 * height - 1, self.head_dim))
        self.rel_width = nn.Parameter(torch.empty(2 * width - 1, self.head_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for conv in (self.query, self.key, self.value):
            nn.init.normal_(conv.weight, std=0.01)
        for table in (self.rel_height, self.rel_width):
            nn.init.normal_(table, std=self.head_dim ** -0.5)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) → (N, heads, H, W, d)."""
        n, _, h, w = x.shape
        return x.view(n, self.heads, self.head_dim, h, w).permute(0, 1, 3, 4, 2)

    def relative_tables(self, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
        """r^H (2h−1, d) and r^W (2w−1, d) for an h × w map: the learnt tables, or (eval only) resized."""
        if (h, w) == (self.height, self.width):
            return self.rel_height, self.rel_width
        if self.training:
            raise ValueError(f"BoT MHSA built for {self.height}×{self.width} maps got {h}×{w} in training: set "
                             "model.network.input_size to the training crop size (dataset.input_size)")

        def resize(table: torch.Tensor, size: int) -> torch.Tensor:
            if table.shape[0] == 2 * size - 1:
                return table
            return F.interpolate(table.t()[None], size=2 * size - 1, mode="linear", align_corners=True)[0].t()

        return resize(self.rel_height, h), resize(self.rel_width, w)

    def attention_logits(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """q, k: (N, heads, H, W, d), q already scaled → logits (N, heads, H·W, H·W)."""
        n, m, h, w, d = q.shape
        content = torch.einsum("nmyxd,nmYXd->nmyxYX", q, k)
        table_h, table_w = self.relative_tables(h, w)
        rel_h = table_h[relative_index(h, q.device)]  # (H, H', d): row y' − y + H − 1
        rel_w = table_w[relative_index(w, q.device)]  # (W, W', d)
        by_row = torch.einsum("nmyxd,yYd->nmyxY", q, rel_h)[..., :, None]
        by_col = torch.einsum("nmyxd,xXd->nmyxX", q, rel_w)[..., None, :]
        return (content + by_row + by_col).reshape(n, m, h * w, h * w)

    def attend(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) frames → (N, C, H, W) attended, at full resolution."""
        n, c, h, w = frames.shape
        q = self._split_heads(self.query(frames)) * self.head_dim ** -0.5
        k = self._split_heads(self.key(frames))
        v = self._split_heads(self.value(frames)).reshape(n, self.heads, h * w, self.head_dim)
        weights = self.attention_logits(q, k).softmax(dim=-1)
        out = weights @ v  # (N, heads, H·W, d)
        return out.permute(0, 1, 3, 2).reshape(n, c, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        frames = x.transpose(1, 2).reshape(b * t, c, h, w)
        out = self.attend(frames)
        if self.stride == 2:
            out = F.avg_pool2d(out, 2, 2, ceil_mode=True)  # odd sizes: as the strided shortcut, ⌈n/2⌉
        return out.view(b, t, c, *out.shape[-2:]).transpose(1, 2)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, heads={self.heads}, size={self.height}x{self.width}, stride={self.stride}"
