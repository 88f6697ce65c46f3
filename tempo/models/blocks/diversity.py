"""Diversity losses of ST-MANet (spec D.5): stages should attend differently.

Each stage's attention matrix is pooled to a common size (that of the last stage), then the cosine
similarity of every ordered pair of stages is summed (12 pairs for stages 2–5 [D31]) or averaged
(``reduction="mean"``, L ∈ [0, 1] since entries are non-negative). The loss is minimised, pushing the
stages' attention patterns apart; its gradient reaches the projections that produced the matrices.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

REDUCTIONS = ("sum", "mean")
Grid = tuple[int, int]


@dataclass
class SpatialAttention:
    """An SDA matrix (B, h·w, h'·w') with its query grid (h, w) and key grid (h', w')."""

    matrix: torch.Tensor
    query_grid: Grid
    key_grid: Grid


def pool_temporal_attention(attention: torch.Tensor, size: int) -> torch.Tensor:
    """(B, T, T) → (B, size, size) by adaptive average pooling."""
    return F.adaptive_avg_pool2d(attention, (size, size))


def pool_spatial_attention(attention: SpatialAttention, query_grid: Grid, key_grid: Grid) -> torch.Tensor:
    """(B, h·w, h'·w') → (B, qh·qw, kh·kw): pool the query positions over their (h, w) grid, then the key
    positions over theirs [D30] — pooling the raster-flattened matrix would mix image rows."""
    a = attention.matrix
    (h, w), (hk, wk) = attention.query_grid, attention.key_grid
    b = a.shape[0]
    by_query = a.transpose(1, 2).reshape(b, hk * wk, h, w)  # (B, keys, h, w)
    by_query = F.adaptive_avg_pool2d(by_query, query_grid)  # (B, keys, qh, qw)
    by_key = by_query.flatten(2).transpose(1, 2).reshape(b, -1, hk, wk)  # (B, queries, h', w')
    return F.adaptive_avg_pool2d(by_key, key_grid).flatten(2)


def cosine_similarity(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """f(A, B) = ⟨vec A, vec B⟩ / (‖A‖‖B‖ + eps) per clip, averaged over the batch."""
    a, b = a.flatten(1).float(), b.flatten(1).float()
    return ((a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + eps)).mean()


def pairwise_similarity(matrices: Sequence[torch.Tensor], reduction: str = "sum") -> torch.Tensor:
    """Σ (or mean) of f(S_i, S_j) over the ordered pairs i ≠ j of equally-sized matrices."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"model.network.div_reduction={reduction!r}: use one of {REDUCTIONS}")
    if len(matrices) < 2:
        raise ValueError(f"a diversity loss needs the attention of at least 2 stages, got {len(matrices)}")
    terms = [cosine_similarity(a, b) for i, a in enumerate(matrices) for j, b in enumerate(matrices) if i != j]
    total = torch.stack(terms).sum()
    return total / len(terms) if reduction == "mean" else total


def temporal_diversity(attentions: Sequence[torch.Tensor], reduction: str = "sum") -> torch.Tensor:
    """L_t over stages' (B, T_i, T_i) matrices, pooled to the last one's T."""
    size = attentions[-1].shape[-1]
    return pairwise_similarity([pool_temporal_attention(a, size) for a in attentions], reduction)


def spatial_diversity(attentions: Sequence[SpatialAttention], reduction: str = "sum") -> torch.Tensor:
    """L_s over stages' SDA matrices, pooled to the last one's query and key grids."""
    last = attentions[-1]
    return pairwise_similarity([pool_spatial_attention(a, last.query_grid, last.key_grid) for a in attentions],
                               reduction)
