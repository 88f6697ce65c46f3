"""TDPN: Temporal Difference Pyramid Network on a SlowOnly-style 3D ResNet (spec C, a reconstruction).

    video ─► stem ─► res2 ─► res3 ─► res4 (+ H4) ─► res5 (+ H5) ─► pyramid(F2..F5) ─► GAP ─► dropout ─► fc
                     └ G in every block ┘   │          └ BoT MHSA ┘
    RGB differences ─► local CNN ───────────┴ H4, H5          aux head on F4 (training only)

* ``use_global_low`` (C2): a ``GlobalTemporalDifference`` in every res2/res3 bottleneck, between
  conv1→BN→ReLU and the spatial conv (the backbone's ``after_conv1`` slot);
* ``use_local_high`` (C3): a ``LocalTemporalDifference`` branch (``local_variant`` low_resolution|light|deep)
  added to the res4 and res5 outputs (low_resolution: Eq. 1's Up(CNN(Down(D))), the default; light) or res4
  only (deep); zero-γ laterals make it a no-op at init;
* ``use_mhsa`` (C1/O4): res5's 1×3×3 convs become per-frame ``BoTSelfAttention`` (+ a fresh BN); the
  relative tables are sized from ``input_size`` (14×14 / 7×7 at 224²);
* the TPN-style pyramid (C4) over F2..F5 — built by ``pyramid`` (``ssm_groups``, ``trm_rates``, ``flow``);
* heads (C5): main GAP → dropout → fc; with ``aux_weight > 0`` an auxiliary head on F4 whose logits are
  returned as ``"aux_logits"`` in training only (the loss weighs it by the same ``model.aux_weight``).

F4 is the res4 map after the local addition: the tensor res5 and the pyramid read (ours; the spec's
"raw res4 output" leaves open whether H4 is in it).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from tempo.models.backbones.resnet3d import ResNet3d
from tempo.models.blocks.bot_mhsa import BoTSelfAttention
from tempo.models.blocks.temporal_difference import GlobalTemporalDifference, LocalTemporalDifference
from tempo.models.blocks.temporal_pyramid import AuxiliaryHead, TemporalPyramid
from tempo.models.weights import init_from_checkpoint

STAGES = ("res2", "res3", "res4", "res5")


def conv_output_size(size: int, module: nn.Module, dim: int = -1) -> int:
    """Output size along spatial dimension ``dim`` (−2: height, −1: width) of a Conv3d / MaxPool3d."""
    k, s, p = (getattr(module, a) for a in ("kernel_size", "stride", "padding"))
    k, s, p = (v[dim] if isinstance(v, tuple) else v for v in (k, s, p))
    return (size + 2 * p - k) // s + 1


def stage_output_sizes(backbone: ResNet3d, height: int, width: int) -> list[tuple[int, int]]:
    """(H, W) of the res2..res5 maps for height × width frames (224² → 56², 28², 14², 7²). A block's spatial
    stride is read from its shortcut conv, which gives the same size as its 3×3 conv or strided MHSA."""
    sizes, hw = [], [height, width]
    for dim in (0, 1):
        for module in (backbone.conv1, backbone.maxpool):
            hw[dim] = conv_output_size(hw[dim], module, dim - 2)
    for stage in backbone.stages:
        for block in stage:
            if block.downsample is not None:
                hw = [conv_output_size(hw[dim], block.downsample[0], dim - 2) for dim in (0, 1)]
        sizes.append((hw[0], hw[1]))
    return sizes


def add_global_modules(backbone: ResNet3d, reduction: int, zero_init: bool) -> list[GlobalTemporalDifference]:
    """A global temporal-difference module in every res2/res3 bottleneck (spec C2/O6)."""
    modules = []
    for stage in backbone.stages[:2]:
        for block in stage:
            block.after_conv1 = GlobalTemporalDifference(block.conv1.out_channels, reduction, zero_init)
            modules.append(block.after_conv1)
    return modules


def add_bot_attention(backbone: ResNet3d, input_size: int, heads: int) -> list[BoTSelfAttention]:
    """Replace every res5 spatial conv by per-frame MHSA + a fresh BN (spec C1/O4); the pretrained res5
    3×3 kernels are discarded. A strided block attends at full resolution, then average-pools."""
    size = stage_output_sizes(backbone, input_size, input_size)[2][0]
    modules = []
    for block in backbone.stages[3]:
        stride_t, stride_h, stride_w = block.conv2.stride
        if stride_t != 1 or stride_h != stride_w:
            raise ValueError(f"use_mhsa needs res5 blocks without temporal stride and with equal spatial "
                             f"strides; backbone has {block.conv2.stride} (set backbone.temporal_strides)")
        planes = block.conv2.in_channels
        block.conv2 = BoTSelfAttention(planes, size, size, heads=heads, stride=stride_h)
        block.bn2 = nn.BatchNorm3d(planes)
        modules.append(block.conv2)
        size = (size - 1) // stride_h + 1
    return modules


def make_local_branch(backbone: ResNet3d, variant: str, num_differences: int,
                      pretrained: str | None) -> LocalTemporalDifference:
    """The local module shaped like the backbone's stem and first stages (R50: 64, [64, 128, 256] × 4)."""
    stages = backbone.stages
    planes = [stage[0].conv1.out_channels for stage in stages[:3]]
    return LocalTemporalDifference(
        stem_width=backbone.conv1.out_channels, planes=planes, blocks=[len(s) for s in stages[:3]],
        fuse_channels=backbone.stage_channels[2:], variant=variant,
        expansion=backbone.stage_channels[0] // planes[0], num_differences=num_differences, pretrained=pretrained)


class TDPN(nn.Module):
    """TDPN network; ``forward(video (B, 3, T, H, W))`` → ``{"logits", "aux_logits" (training only)}``.

    backbone: ResNet3d factory (Hydra ``_partial_``). pyramid: ``TemporalPyramid`` factory (``_partial_``,
    carries ``ssm_groups``, ``trm_rates``, ``flow``), called with the stage widths. input_size: crop
    side (sizes the MHSA tables). global_reduction/global_zero_init: C2's C/c and BN_e γ=β=0 at init.
    local_num_differences/local_pretrained: C3's stacked differences per frame and the ImageNet source of the
    local CNN (null, imagenet, or a torchvision-format ResNet-50 file). mhsa_heads: C1's 4 heads.
    init_checkpoint: fine-tuning start — a tempo checkpoint of the same network (all but the classifiers), or
    a released 3D ResNet (MMAction2 I3D/SlowOnly, `tempo.convert` output): its backbone initialises the trunk;
    the temporal-difference modules, res5's MHSA (+ fresh BN), pyramid and heads start fresh.
    """

    def __init__(self, backbone: Callable[..., ResNet3d], pyramid: Callable[..., TemporalPyramid],
                 num_classes: int, input_size: int = 224, use_global_low: bool = True,
                 use_local_high: bool = True, use_mhsa: bool = True, local_variant: str = "low_resolution",
                 aux_weight: float = 0.5, dropout: float = 0.5, global_reduction: int = 16,
                 global_zero_init: bool = True, local_num_differences: int = 4, local_pretrained: str | None = None,
                 mhsa_heads: int = 4, init_checkpoint: str | None = None):
        super().__init__()
        if aux_weight < 0:
            raise ValueError(f"model.aux_weight must be ≥ 0 (0 disables the auxiliary head), got {aux_weight}")
        self.backbone = backbone()
        if not isinstance(self.backbone, ResNet3d):
            raise ValueError(f"model=tdpn needs a 3D ResNet, got {type(self.backbone).__name__}: add "
                             "backbone=resnet3d50 (or resnet3d101, resnet3d_tiny) to the command line")
        self.use_global_low, self.use_local_high, self.use_mhsa = use_global_low, use_local_high, use_mhsa
        if use_global_low:
            add_global_modules(self.backbone, global_reduction, global_zero_init)
        if use_mhsa:
            add_bot_attention(self.backbone, input_size, mhsa_heads)
        self.local = (make_local_branch(self.backbone, local_variant, local_num_differences, local_pretrained)
                      if use_local_high else None)
        channels = self.backbone.stage_channels
        self.pyramid = pyramid(in_channels=list(channels))
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(self.pyramid.out_channels, num_classes)
        nn.init.normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)
        self.aux_head = AuxiliaryHead(channels[2], num_classes, dropout) if aux_weight > 0 else None
        if init_checkpoint:
            init_from_checkpoint(self, init_checkpoint, skip=("fc.", "aux_head.fc."),
                                 hint="same backbone and TDPN switches needed")

    def features(self, video: torch.Tensor) -> list[torch.Tensor]:
        """F2..F5: the res2..res5 maps after the temporal-difference modules, each (B, C_l, T, H_l, W_l)."""
        local = {}
        if self.local is not None:  # one call of the branch (so tempo.profile counts it as one block)
            sizes = dict(zip(STAGES, stage_output_sizes(self.backbone, *video.shape[-2:]), strict=True))
            local = self.local(video, sizes)
        x = self.backbone.stem(video)
        maps = []
        for name, stage in zip(STAGES, self.backbone.stages, strict=True):
            x = stage(x)
            if name in local:
                x = x + local[name]
            maps.append(x)
        return maps

    def forward(self, video: torch.Tensor) -> dict[str, torch.Tensor]:
        maps = self.features(video)
        pooled = self.pyramid(maps).mean(dim=(2, 3, 4))
        out = {"logits": self.fc(self.dropout(pooled))}
        if self.training and self.aux_head is not None:
            out["aux_logits"] = self.aux_head(maps[2])
        return out

    def replaced_backbone_prefixes(self) -> list[str]:
        """Backbone modules TDPN replaced (res5's spatial convs by MHSA, with fresh BNs): fine-tuning from a
        released 3D ResNet leaves them fresh (`tempo.models.zoo.finetune`)."""
        if not self.use_mhsa:
            return []
        return [f"backbone.layer4.{i}.{part}." for i in range(len(self.backbone.layer4)) for part in ("conv2", "bn2")]

    def training_only_modules(self) -> list[nn.Module]:
        """Modules that only run in training (the auxiliary head): ``tempo.profile`` leaves them out of the
        inference parameter count."""
        return [self.aux_head] if self.aux_head is not None else []

    def profile_blocks(self) -> dict[str, nn.Module]:
        """TDPN's own blocks by label, each a row of ``tempo.profile``: G@res2.0 …, MHSA@res5.0 …, local."""
        blocks: dict[str, nn.Module] = {}
        for name, stage in zip(STAGES, self.backbone.stages, strict=True):
            for i, block in enumerate(stage):
                if isinstance(block.after_conv1, GlobalTemporalDifference):
                    blocks[f"G@{name}.{i}"] = block.after_conv1
                if isinstance(block.conv2, BoTSelfAttention):
                    blocks[f"MHSA@{name}.{i}"] = block.conv2
        if self.local is not None:
            blocks[f"local ({self.local.variant})"] = self.local
        return blocks

    def extra_repr(self) -> str:
        variant = self.local.variant if self.local is not None else "off"
        return (f"use_global_low={self.use_global_low}, use_local_high={self.use_local_high} ({variant}), "
                f"use_mhsa={self.use_mhsa}")
