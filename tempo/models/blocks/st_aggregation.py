"""ST-MANet's attention blocks (spec D.2–D.3): temporal and spatial deep aggregation on 3D feature maps.

Both act on a stage output Z of shape (B, C, T, H, W) and return an additive term for the stage output
``Z̄ = Z + ΔT + ΔS`` plus their attention matrix, which the diversity losses (``diversity.py``) compare
across stages.

* ``TemporalDeepAggregation`` (TDA): frames are the tokens. A T×T attention A_t is computed from Z
  concatenated with the previous stage's TDA output (the chain), applied (1) to that concatenation and
  projected by ε into the next link of the chain, and (2) to Z itself and projected by ε' into ΔT.
* ``SpatialDeepAggregation`` (SDA): positions are the tokens, time folded into the features; an
  HW×H'W' attention A_s (keys/values optionally average-pooled) mixes Z into ΔS.
"""

from __future__ import annotations

import math

import torch
from torch import nn

EPS_ORDERS = ("pool_conv", "conv_pool")


def temporal_conv(in_channels: int, out_channels: int, groups: int = 1, bias: bool = False) -> nn.Conv3d:
    """3×1×1 convolution over time, same length (the paper's kernel for φ, ϖ, ε and ε')."""
    return nn.Conv3d(in_channels, out_channels, (3, 1, 1), padding=(1, 0, 0), groups=groups, bias=bias)


def tda_chain_stem(in_channels: int, out_channels: int) -> nn.Sequential:
    """Z_TDA^1 = ReLU(BN(Conv1×1×1(Z^1))) [D20]: the chain input of the first TDA (no earlier TDA exists)."""
    return nn.Sequential(nn.Conv3d(in_channels, out_channels, 1, bias=False), nn.BatchNorm3d(out_channels),
                         nn.ReLU(inplace=True))


def mix_frames(attention: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(B, T, T) attention applied along time of (B, C, T, H, W): out[:, :, t] = Σ_s A[t, s] x[:, :, s]."""
    return torch.einsum("bts,bcshw->bcthw", attention, x)


class TemporalDeepAggregation(nn.Module):
    """TDA of one stage (spec D.2). ``forward(z, chain) -> (delta_t, chain_out, attention)``.

    z: (B, C, T, H, W) stage output; chain: (B, chain_channels, T, H, W), the previous TDA output
    (C/2 channels in the paper's network). attention A_t: (B, T, T), rows sum to 1.
    chain_out = ε(A_t · cat(z, chain)): C channels, pooled to (⌈T/2⌉, ⌈H/2⌉, ⌈W/2⌉) unless ``last``.
    delta_t = ε'(A_t · z): C channels, same shape as z; zero at init when ``zero_init_delta``.

    Options ([Dn] of the spec): ``reduction`` — φ/ϖ output C/reduction channels [D21]; ``scaled`` — divide
    the logits by √d [D22]; ``eps_order`` — "pool_conv" (default, 8× cheaper) or the paper's "conv_pool"
    [D23]; ``delta_groups`` — groups of ε' [D25]; ``zero_init_delta`` — ε''s BN starts at γ=0 [D25]. ε' ends in
    that BN with no ReLU after it, so the zero-γ branch still learns (γ receives the gradient of the first
    step, the conv the gradients after it). ``chain_output=False`` builds no ε (chain_out is None): the last
    stage's chain output is only used when it is fused into the head's input.
    """

    def __init__(self, channels: int, chain_channels: int, last: bool = False, reduction: int = 16,
                 scaled: bool = True, eps_order: str = "pool_conv", delta_groups: int = 8,
                 zero_init_delta: bool = True, chain_output: bool = True):
        super().__init__()
        if eps_order not in EPS_ORDERS:
            raise ValueError(f"model.network.eps_order={eps_order!r}: use one of {EPS_ORDERS}")
        if channels % reduction or channels % delta_groups:
            raise ValueError(f"TDA on {channels} channels: model.network.tda_reduction ({reduction}) and "
                             f"model.network.delta_groups ({delta_groups}) must divide the stage's channels")
        concat = channels + chain_channels
        self.channels, self.chain_channels, self.last, self.scaled = channels, chain_channels, last, scaled
        self.eps_order = eps_order
        self.query = temporal_conv(concat, channels // reduction)  # φ
        self.key = temporal_conv(concat, channels // reduction)  # ϖ
        self.chain_output = chain_output
        if chain_output:
            self.eps_conv = temporal_conv(concat, channels)
            self.eps_bn = nn.BatchNorm3d(channels)
        self.pool = None if last else nn.MaxPool3d(3, stride=2, padding=1)
        self.delta_conv = temporal_conv(channels, channels, groups=delta_groups)  # ε'
        self.delta_bn = nn.BatchNorm3d(channels)
        self.relu = nn.ReLU(inplace=True)
        if zero_init_delta:
            nn.init.zeros_(self.delta_bn.weight)

    def attention(self, concat: torch.Tensor) -> torch.Tensor:
        """A_t = softmax_row(q k / √d) over frames, q/k flattened to (C'·H·W) per frame: (B, T, T)."""
        q, k = self.query(concat), self.key(concat)
        logits = torch.einsum("bcthw,bcshw->bts", q, k)
        if self.scaled:
            logits = logits / math.sqrt(q.shape[1] * q.shape[3] * q.shape[4])
        return logits.float().softmax(dim=-1).to(concat.dtype)

    def eps(self, mixed: torch.Tensor) -> torch.Tensor:
        """ε: (pool) → 3×1×1 conv → BN → ReLU, pooling skipped at the last stage."""
        if self.pool is not None and self.eps_order == "pool_conv":
            mixed = self.pool(mixed)
        out = self.eps_conv(mixed)
        if self.pool is not None and self.eps_order == "conv_pool":
            out = self.pool(out)
        return self.relu(self.eps_bn(out))

    def forward(self, z: torch.Tensor, chain: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        if chain.shape[2:] != z.shape[2:] or chain.shape[1] != self.chain_channels:
            raise ValueError(f"TDA chain input {tuple(chain.shape)} does not fit the stage output {tuple(z.shape)} "
                             f"({self.chain_channels} channels at the same T, H, W expected)")
        concat = torch.cat([z, chain], dim=1)
        attention = self.attention(concat)
        chain_out = self.eps(mix_frames(attention, concat)) if self.chain_output else None
        delta_t = self.delta_bn(self.delta_conv(mix_frames(attention, z)))
        return delta_t, chain_out, attention

    def extra_repr(self) -> str:
        return (f"last={self.last}, scaled={self.scaled}, eps_order={self.eps_order!r}, "
                f"chain_output={self.chain_output}")


class SpatialDeepAggregation(nn.Module):
    """SDA of one stage (spec D.3). ``forward(z) -> (delta_s, attention)``.

    Tokens are the H·W positions of a clip with time folded into the features. q = θ_q(z),
    k = θ_k(pool(z)) with C/reduction channels [D26]; A_s = softmax_row(q k / √(C'·T)) of shape
    (B, H·W, H'·W'); delta_s = A_s · pool(z) reshaped to z's shape (no parameters on the value path).
    ``kv_pool`` > 1 average-pools keys and values kv_pool×kv_pool in space (the non-local sub-sampling
    trick [D27]): every query still sees the whole frame. ``key_grid(h, w)`` gives (H', W').
    """

    def __init__(self, channels: int, reduction: int = 8, kv_pool: int = 1, scaled: bool = True):
        super().__init__()
        if channels % reduction:
            raise ValueError(f"SDA on {channels} channels: model.network.sda_reduction ({reduction}) must divide it")
        if kv_pool < 1:
            raise ValueError(f"model.network.sda_kv_pool must be ≥ 1 (1 = no pooling), got {kv_pool}")
        self.kv_pool, self.scaled = kv_pool, scaled
        self.query = nn.Conv3d(channels, channels // reduction, 1, bias=False)  # θ_q
        self.key = nn.Conv3d(channels, channels // reduction, 1, bias=False)  # θ_k
        self.pool = (nn.AvgPool3d((1, kv_pool, kv_pool), ceil_mode=True) if kv_pool > 1 else nn.Identity())

    def key_grid(self, height: int, width: int) -> tuple[int, int]:
        return math.ceil(height / self.kv_pool), math.ceil(width / self.kv_pool)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, c, t, h, w = z.shape
        values = self.pool(z)
        q = self.query(z).flatten(3)  # (B, C', T, HW)
        k = self.key(values).flatten(3)  # (B, C', T, H'W')
        logits = torch.einsum("bctn,bctm->bnm", q, k)
        if self.scaled:
            logits = logits / math.sqrt(q.shape[1] * t)
        attention = logits.float().softmax(dim=-1).to(z.dtype)  # (B, HW, H'W')
        delta_s = torch.einsum("bnm,bctm->bctn", attention, values.flatten(3))
        return delta_s.reshape(b, c, t, h, w), attention

    def extra_repr(self) -> str:
        return f"kv_pool={self.kv_pool}, scaled={self.scaled}"
