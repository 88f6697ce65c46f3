"""Temporal pyramid (TPN style, spec C4) and TPN's auxiliary head (spec C5).

Levels l = 2..5 are the backbone's res2..res5 outputs F_l (B, C_l, T, H_l, W_l). With C = C_5 (2048 for R50)
and M = C/2 (1024):

1. spatial semantic modulation: level l gets log2(C/C_l) blocks Conv3d (1,3,3) stride (1,2,2), channels
   doubling, grouped (O10), + BN + ReLU, so every level becomes (B, C, T, H_5, W_5);
2. temporal rate modulation: Conv3d C→M (3,1,1) grouped, then max-pool over r_l frames (O11; default r_l = T,
   i.e. the whole clip) → (B, M, T/r_l, H_5, W_5);
3. top-down flow (5→2, nearest upsampling) and bottom-up flow (2→5, Conv3d (3,1,1) then temporal max-pool);
   `flow="cascade"` (TPN's code, O12) feeds the bottom-up flow with the top-down results,
   `flow="parallel"` with the modulation outputs;
4. level fusion of each flow (per-level grouped 1×1×1 + BN + ReLU, concat, 1×1×1 → C + BN + ReLU) and
   pyramid fusion (concat of both, 1×1×1 → C + BN + ReLU) → (B, C, T/max r, H_5, W_5).

Every conv is bias-free and xavier-uniform initialised; BN γ=1, β=0 (nothing starts at zero).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

FLOWS = ("cascade", "parallel")


def _check_groups(channels_in: int, channels_out: int, groups: int, key: str) -> None:
    if channels_in % groups or channels_out % groups:
        raise ValueError(f"{key}={groups} does not divide the pyramid's channels ({channels_in}→{channels_out}); "
                         f"choose a divisor of both (1 always works)")


def conv_bn_relu(c_in: int, c_out: int, kernel, stride=1, padding=0, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(c_in, c_out, kernel, stride, padding, groups=groups, bias=False),
                         nn.BatchNorm3d(c_out), nn.ReLU(inplace=True))


def _temporal_max_pool(x: torch.Tensor, rate: int) -> torch.Tensor:
    rate = min(rate, x.shape[2])
    return x if rate == 1 else F.max_pool3d(x, (rate, 1, 1), (rate, 1, 1), ceil_mode=True)


class SpatialSemanticModulation(nn.Module):
    """Level l: log2(C_top/C_l) strided (1,3,3) conv blocks doubling the channels; the top level is unchanged."""

    def __init__(self, in_channels: Sequence[int], groups: int = 32):
        super().__init__()
        top = in_channels[-1]
        self.levels = nn.ModuleList()
        for c in in_channels:
            steps = math.log2(top / c)
            if steps != int(steps):
                raise ValueError(f"pyramid levels must have C_top/C_l a power of two; got channels {list(in_channels)}")
            blocks = []
            for _ in range(int(steps)):
                _check_groups(c, 2 * c, groups, "ssm_groups")
                blocks.append(conv_bn_relu(c, 2 * c, (1, 3, 3), (1, 2, 2), (0, 1, 1), groups))
                c *= 2
            self.levels.append(nn.Sequential(*blocks))

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        outs = [level(f) for level, f in zip(self.levels, features, strict=True)]
        sizes = {tuple(int(s) for s in o.shape[3:]) for o in outs}  # ints: traced sizes are tensors
        if len(sizes) != 1:
            raise ValueError(f"spatial semantic modulation gives levels of different sizes {sorted(sizes)}; "
                             "use an input size whose res5 map the strided convs reach exactly (e.g. 224, 56, 32)")
        return outs


class TemporalRateModulation(nn.Module):
    """Per level: Conv3d C→M (3,1,1) grouped (no BN/ReLU), then temporal max-pool by the level's rate
    (`rates` None: the whole clip, TPN's released configs)."""

    def __init__(self, num_levels: int, channels: int, out_channels: int, groups: int = 32,
                 rates: Sequence[int] | None = None):
        super().__init__()
        _check_groups(channels, out_channels, groups, "trm_groups")
        if rates is not None and (len(rates) != num_levels or any(int(r) < 1 for r in rates)):
            raise ValueError(f"trm_rates must be null (whole clip) or {num_levels} positive ints, got {list(rates)}")
        self.rates = None if rates is None else [int(r) for r in rates]
        self.convs = nn.ModuleList(
            nn.Conv3d(channels, out_channels, (3, 1, 1), padding=(1, 0, 0), groups=groups, bias=False)
            for _ in range(num_levels))

    def level_rates(self, frames: int) -> list[int]:
        return self.rates or [frames] * len(self.convs)

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        rates = self.level_rates(features[0].shape[2])
        return [_temporal_max_pool(conv(f), r) for conv, f, r in zip(self.convs, features, rates, strict=True)]


class TopDownFlow(nn.Module):
    """O_{l−1} ← O_{l−1} + nearest-upsampled O_l, from the top level down (no parameters)."""

    def forward(self, levels: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        outs = list(levels)
        for i in range(len(outs) - 1, 0, -1):
            outs[i - 1] = outs[i - 1] + F.interpolate(outs[i], size=outs[i - 1].shape[2:], mode="nearest")
        return outs


class BottomUpFlow(nn.Module):
    """O_{l+1} ← O_{l+1} + MaxPool_t(Conv3d (3,1,1)(O_l)), from the bottom level up (each conv dense, no bias)."""

    def __init__(self, num_levels: int, channels: int):
        super().__init__()
        self.downs = nn.ModuleList(nn.Conv3d(channels, channels, (3, 1, 1), padding=(1, 0, 0), bias=False)
                                   for _ in range(num_levels - 1))

    def forward(self, levels: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        outs = list(levels)
        for i, down in enumerate(self.downs):
            rate = math.ceil(outs[i].shape[2] / outs[i + 1].shape[2])
            outs[i + 1] = outs[i + 1] + _temporal_max_pool(down(outs[i]), rate)
        return outs


class LevelFusion(nn.Module):
    """Per level 1×1×1 grouped conv + BN + ReLU, levels pooled to the shortest time, concat, 1×1×1 → out."""

    def __init__(self, num_levels: int, channels: int, out_channels: int, groups: int = 32):
        super().__init__()
        _check_groups(channels, channels, groups, "level_groups")
        self.levels = nn.ModuleList(conv_bn_relu(channels, channels, 1, groups=groups) for _ in range(num_levels))
        self.fuse = conv_bn_relu(num_levels * channels, out_channels, 1)

    def forward(self, levels: Sequence[torch.Tensor]) -> torch.Tensor:
        outs = [conv(x) for conv, x in zip(self.levels, levels, strict=True)]
        frames = min(o.shape[2] for o in outs)
        outs = [_temporal_max_pool(o, math.ceil(o.shape[2] / frames)) for o in outs]
        return self.fuse(torch.cat(outs, dim=1))


class TemporalPyramid(nn.Module):
    """TPN-style pyramid over backbone stage outputs (spec C4): list of (B, C_l, T, H_l, W_l) → (B, C, T', h, w).

    in_channels: per level (e.g. `backbone.stage_channels`); C = in_channels[-1], M = C/2.
    ssm_groups (O10; 1 = TPN's dense rule), trm_groups, level_groups: conv groups; trm_rates (O11): per-level
    temporal pooling rates, None = T; flow (O12): "cascade" | "parallel" input of the bottom-up flow.
    """

    def __init__(self, in_channels: Sequence[int], ssm_groups: int = 32, trm_groups: int = 32,
                 level_groups: int = 32, trm_rates: Sequence[int] | None = None, flow: str = "cascade"):
        super().__init__()
        if flow not in FLOWS:
            raise ValueError(f"pyramid flow={flow!r}; choose one of {list(FLOWS)}")
        self.flow = flow
        levels, top = len(in_channels), in_channels[-1]
        self.out_channels = top
        mid = top // 2
        self.spatial_modulation = SpatialSemanticModulation(in_channels, ssm_groups)
        self.temporal_modulation = TemporalRateModulation(levels, top, mid, trm_groups, trm_rates)
        self.top_down = TopDownFlow()
        self.bottom_up = BottomUpFlow(levels, mid)
        self.top_down_fusion = LevelFusion(levels, mid, top, level_groups)
        self.bottom_up_fusion = LevelFusion(levels, mid, top, level_groups)
        self.pyramid_fusion = conv_bn_relu(2 * top, top, 1)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.xavier_uniform_(m.weight)
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        modulated = self.temporal_modulation(self.spatial_modulation(features))
        top_down = self.top_down(modulated)
        bottom_up = self.bottom_up(top_down if self.flow == "cascade" else modulated)
        fused = torch.cat([self.top_down_fusion(top_down), self.bottom_up_fusion(bottom_up)], dim=1)
        return self.pyramid_fusion(fused)


class AuxiliaryHead(nn.Module):
    """TPN's auxiliary classifier on res4 (spec C5): Conv3d C→2C (1,3,3) stride (1,2,2) + BN + ReLU → global
    average pool → dropout → Linear (N(0, 0.01), zero bias). Used in training only."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.5):
        super().__init__()
        self.conv = conv_bn_relu(in_channels, 2 * in_channels, (1, 3, 3), (1, 2, 2), (0, 1, 1))
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(2 * in_channels, num_classes)
        nn.init.xavier_uniform_(self.conv[0].weight)
        nn.init.normal_(self.fc.weight, 0, 0.01)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.conv(x).mean(dim=(2, 3, 4))))
