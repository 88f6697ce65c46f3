"""T-CNN (Zhou et al. 2022, Table 1; spec A): a 36-row 3D CNN of depthwise-separable rows, nine of them
dilated in time, on clips of consecutive frames (no temporal down-sampling).

Rows and stages follow spec A.1. The table gives no kernel sizes; each row is a depthwise 3×3×3 conv
(temporal dilation d, spatial stride s) + pointwise 1×1×1 conv + BN + ReLU [D2], which lands on the
paper's 15.78 GFLOPs (16.0 GMACs at 16×224², 2,457,797 parameters at 101 classes). The first row is a
dense 3×3×3 stem. Spatial stride 2 at the first row of stages 1, 2, 4 and 6 (total 16) and none in time
[D1]: the stage-7 maps are 14×14 per input frame, which the sparse-attention model reads as class
response maps. Rows with equal in/out widths and stride 1 are residual [D3] (no parameters added).

Rows are numbered within their stage from 1, the stage's first row included (stage 4: 96→160 is row 1, so
the dilated rows 4, 6, 8 are its 3rd, 5th and 7th 160→160 rows).

``TCNNBackbone(x) -> (B, 512, T, H/16, W/16)``; ``TCNN`` adds GAP → dropout → FC and returns
``{"logits"}`` — the paper's "T-CNN" row and the O-only pre-stage of ``model=tcnn_sparse``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from tempo.models.init import kaiming_conv_unit_bn
from tempo.models.weights import init_from_checkpoint, load_fitting, read_state_dict

#: Per stage, its rows as (width index, temporal dilation): row widths are ``widths[index]``. Stage 5
#: starts with a dilated row that keeps stage 4's width (160→160) before widening (spec A.1).
STAGE_ROWS: tuple[tuple[tuple[int, int], ...], ...] = (
    ((0, 1), (0, 1)),                                   # stem 3→32 (dense), 32→32
    ((1, 1), (1, 1)),
    ((2, 1), (2, 1)),
    ((3, 1), (3, 1), (3, 1), (3, 4), (3, 1), (3, 4), (3, 1), (3, 4), (3, 1), (3, 1), (3, 1)),
    ((3, 4), (4, 1), (4, 1), (4, 1), (4, 2), (4, 1), (4, 4)),
    ((5, 1), (5, 1), (5, 1), (5, 2), (5, 1), (5, 2), (5, 1), (5, 1)),
    ((6, 1), (6, 1), (6, 1), (6, 2)),
)
WIDTHS = (32, 64, 96, 160, 224, 288, 512)
#: Spatial stride of each stage's first row [D1]: total 16, 14×14 maps at 224².
STAGE_STRIDES = (2, 2, 1, 2, 1, 2, 1)


def dilated_rows() -> list[tuple[int, int, int]]:
    """(stage, row, dilation), 1-based, of every row with temporal dilation > 1 (nine rows)."""
    return [(s + 1, r + 1, d) for s, rows in enumerate(STAGE_ROWS) for r, (_, d) in enumerate(rows) if d > 1]


class SeparableRow(nn.Module):
    """One T-CNN row [D2]: depthwise 3×3×3 (dilation (d,1,1), stride (1,s,s)) → pointwise 1×1×1 → BN → ReLU;
    with ``residual`` (only where shapes allow) ``ReLU(BN(pw(dw(x))) + x)`` [D3]."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1,
                 residual: bool = True):
        super().__init__()
        self.depthwise = nn.Conv3d(in_channels, in_channels, 3, stride=(1, stride, stride),
                                   padding=(dilation, 1, 1), dilation=(dilation, 1, 1), groups=in_channels,
                                   bias=False)
        self.pointwise = nn.Conv3d(in_channels, out_channels, 1, bias=False)
        self.bn = nn.BatchNorm3d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.residual = residual and in_channels == out_channels and stride == 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(self.pointwise(self.depthwise(x)))
        return self.relu(y + x if self.residual else y)


class Stem(nn.Sequential):
    """Dense Conv3d(3→w, 3×3×3, stride (1,s,s)) → BN → ReLU: the first row."""

    def __init__(self, out_channels: int, stride: int = 2, in_channels: int = 3):
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels, 3, stride=(1, stride, stride), padding=1, bias=False)
        self.bn = nn.BatchNorm3d(out_channels)
        self.relu = nn.ReLU(inplace=True)


def check_widths(widths: Sequence[int], strides: Sequence[int]) -> tuple[list[int], list[int]]:
    widths, strides = [int(w) for w in widths], [int(s) for s in strides]
    if len(widths) != len(STAGE_ROWS) or min(widths) < 1:
        raise ValueError(f"backbone.widths must list {len(STAGE_ROWS)} positive stage widths "
                         f"(paper: {list(WIDTHS)}), got {widths}")
    if len(strides) != len(STAGE_ROWS) or any(s not in (1, 2) for s in strides):
        raise ValueError(f"backbone.stage_strides must list {len(STAGE_ROWS)} spatial strides of 1 or 2 "
                         f"(paper reading [D1]: {list(STAGE_STRIDES)}), got {strides}")
    return widths, strides


class TCNNBackbone(nn.Module):
    """The 36 rows of spec A.1 in ``stages`` (7 ``nn.Sequential``); ``forward(x) -> stage-7 features``."""

    def __init__(self, widths: Sequence[int] = WIDTHS, stage_strides: Sequence[int] = STAGE_STRIDES,
                 residual: bool = True, pretrained: str | None = None):
        super().__init__()
        widths, strides = check_widths(widths, stage_strides)
        self.widths, self.stage_strides, self.residual = widths, strides, residual
        self.out_channels = widths[-1]
        self.stride = 1
        for s in strides:
            self.stride *= s
        stages, channels = [], 3
        for index, rows in enumerate(STAGE_ROWS):
            layers = []
            for row, (width_index, dilation) in enumerate(rows):
                out, stride = widths[width_index], strides[index] if row == 0 else 1
                if channels == 3:
                    layers.append(Stem(out, stride))
                else:
                    layers.append(SeparableRow(channels, out, stride, dilation, residual))
                channels = out
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)
        self.reset_parameters()
        if pretrained:
            self.load_pretrained(pretrained)

    def load_pretrained(self, path: str) -> None:
        """Every backbone tensor from a tempo checkpoint, a T-CNN network state dict or a backbone state dict."""
        what = "model.network.backbone.pretrained"
        state = read_state_dict(path, what)
        for prefix in ("network.backbone.", "backbone."):
            if any(k.startswith(prefix) for k in state):
                state = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
                break
        load_fitting(self, state, f"{what}={path}", hint="a T-CNN with the same widths needed")

    def reset_parameters(self) -> None:
        kaiming_conv_unit_bn(self, (nn.Conv3d,), (nn.BatchNorm3d,))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5 or x.shape[1] != 3:
            raise ValueError(f"T-CNN expects clips (B, 3, T, H, W), got {tuple(x.shape)}")
        for stage in self.stages:
            x = stage(x)
        return x


def build_backbone(backbone: Callable[..., TCNNBackbone] | TCNNBackbone | None) -> TCNNBackbone:
    """A ``TCNNBackbone`` from an instance, a Hydra ``_partial_`` factory or None (the paper's widths)."""
    if backbone is None:
        return TCNNBackbone()
    factory = getattr(backbone, "func", None)  # a Hydra `_partial_`: check before building it
    net = backbone if isinstance(backbone, nn.Module) or (
        isinstance(factory, type) and not issubclass(factory, TCNNBackbone)) else backbone()
    if not isinstance(net, TCNNBackbone):
        name = factory.__name__ if isinstance(factory, type) else type(net).__name__
        raise ValueError(f"model.network.backbone must be a T-CNN backbone, got {name}; choose one with "
                         "backbone@model.network.backbone=tcnn (or tcnn_tiny)")
    return net


def check_start_checkpoint(path: str | None, make: str) -> None:
    """A missing ``model.network.init_checkpoint`` fails before anything is built, with the run that makes it."""
    if path and not Path(path).is_file():
        raise FileNotFoundError(f"model.network.init_checkpoint={path} does not exist: make it with `{make}` (its "
                                "checkpoints/last.ckpt), or pass another checkpoint, or "
                                "model.network.init_checkpoint=null to start from scratch")


class TCNN(nn.Module):
    """T-CNN classifier: backbone → GAP over (T, H, W) → dropout → FC (spec A.1 head).

    ``forward(video) -> {"logits": (B, K)}``; ``features(video) -> (pooled (B, C), maps (B, C, T, h, w))``.
    """

    def __init__(self, num_classes: int, backbone: Callable[..., TCNNBackbone] | TCNNBackbone | None = None,
                 dropout: float = 0.5, init_checkpoint: str | None = None):
        super().__init__()
        check_start_checkpoint(init_checkpoint, "python -m tempo.train experiment=tcnn_k400")
        self.backbone = build_backbone(backbone)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(self.backbone.out_channels, num_classes)
        nn.init.normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)
        if init_checkpoint:
            init_from_checkpoint(self, init_checkpoint, hint="same backbone widths needed")

    def features(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        maps = self.backbone(video)
        return maps.mean(dim=(2, 3, 4)), maps

    def forward(self, video: torch.Tensor) -> dict:
        pooled, _ = self.features(video)
        return {"logits": self.fc(self.dropout(pooled))}
