"""3D ResNet (Conv3d bottlenecks, torchvision state-dict names) with 2D→3D ImageNet inflation.

One class covers the 3D family: SlowOnly/I3D/TPN/TDPN backbones (stem (1,7,7), conv1 of the res4–res5 blocks
(3,1,1), no temporal stride: spec C1) and ST-MANet's (stem 7×7×7, every conv2 3×3×3, temporal stride 2 in
res3–res5, stem max-pool with temporal stride 1). Clips stay (B, C, T, H, W) throughout.

Names follow torchvision (`conv1, bn1, relu, maxpool, layer1..layer4`, blocks `conv1..bn3, downsample`), so
`pretrained: imagenet` inflates the torchvision 2D weights key by key: every (t, k, k) kernel gets t copies of
the 2D k×k kernel divided by t (a temporally constant clip then gives the 2D response, spec C1), BN affine
parameters and running statistics are copied.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from tempo.models.init import kaiming_conv_unit_bn
from tempo.models.weights import load_fitting, read_backbone_weights

log = logging.getLogger(__name__)

LAYERS = {50: [3, 4, 6, 3], 101: [3, 4, 23, 3]}
#: Where a block's temporal kernel goes: conv1 (3,1,1) as in SlowOnly/TPN, or conv2 (3,3,3) as in I3D/C3D.
INFLATE_STYLES = ("3x1x1", "3x3x3")


def _triple(value: int | Sequence[int], key: str) -> tuple[int, int, int]:
    values = (value,) * 3 if isinstance(value, int) else tuple(int(v) for v in value)
    if len(values) != 3:
        raise ValueError(f"backbone.{key} must be one int or [t, h, w]; got {value!r}")
    return values


@dataclass(frozen=True)
class StemSpec:
    """The stem: Conv3d(3 → width, kernel, stride, padding kernel//2) + BN + ReLU + MaxPool3d(pool_kernel,
    pool_stride, padding pool_kernel//2). Defaults: SlowOnly/TPN/TDPN (spec C1)."""

    width: int = 64
    kernel: tuple[int, int, int] = (1, 7, 7)
    stride: tuple[int, int, int] = (1, 2, 2)
    pool_kernel: tuple[int, int, int] = (1, 3, 3)
    pool_stride: tuple[int, int, int] = (1, 2, 2)

    @classmethod
    def build(cls, spec: StemSpec | Mapping | None) -> StemSpec:
        if spec is None or isinstance(spec, StemSpec):
            return spec or cls()
        unknown = set(spec) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"backbone.stem: unknown keys {sorted(unknown)}; allowed: "
                             f"{sorted(cls.__dataclass_fields__)}")
        fields = {k: (v if k == "width" else _triple(v, f"stem.{k}")) for k, v in spec.items()}
        return cls(**fields)


def _pad(kernel: Sequence[int]) -> tuple[int, ...]:
    return tuple(k // 2 for k in kernel)


class Bottleneck3d(nn.Module):
    """1×1×1 → 1×3×3 (stride) → 1×1×1 (×4) bottleneck; `inflate` puts the temporal kernel on conv1 (3,1,1)
    or conv2 (3,3,3) according to `style`. Spatial and temporal strides act on conv2 and on the shortcut.

    `after_conv1` (identity by default) runs between conv1→BN→ReLU and conv2: the slot where TDPN's global
    temporal-difference module goes (spec C2); its keys never collide with ImageNet's.
    """

    expansion = 4

    def __init__(self, inplanes: int, planes: int, spatial_stride: int = 1, temporal_stride: int = 1,
                 inflate: bool = False, style: str = "3x1x1", downsample: nn.Module | None = None):
        super().__init__()
        k1 = (3, 1, 1) if inflate and style == "3x1x1" else (1, 1, 1)
        k2 = (3, 3, 3) if inflate and style == "3x3x3" else (1, 3, 3)
        self.conv1 = nn.Conv3d(inplanes, planes, k1, padding=_pad(k1), bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.after_conv1: nn.Module = nn.Identity()
        self.conv2 = nn.Conv3d(planes, planes, k2, (temporal_stride, spatial_stride, spatial_stride),
                               padding=_pad(k2), bias=False)
        self.bn2 = nn.BatchNorm3d(planes)
        self.conv3 = nn.Conv3d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm3d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        out = self.after_conv1(self.relu(self.bn1(self.conv1(x))))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.bn3(self.conv3(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(self.residual(x) + identity)


def _block_flags(inflate: Sequence[int | Sequence[int]], layers: Sequence[int]) -> list[list[bool]]:
    """Per-stage `inflate` entry (0/1 for every block of the stage, or one 0/1 per block) → flags per block."""
    if len(inflate) != len(layers):
        raise ValueError(f"backbone.inflate needs one entry per stage ({len(layers)}), got {list(inflate)}")
    flags = []
    for stage, (entry, n) in enumerate(zip(inflate, layers, strict=True), start=2):
        per_block = [bool(entry)] * n if isinstance(entry, (int, bool)) else [bool(v) for v in entry]
        if len(per_block) != n:
            raise ValueError(f"backbone.inflate for res{stage} lists {len(per_block)} blocks; the stage has {n} "
                             "(give one 0/1 for the whole stage or one per block)")
        flags.append(per_block)
    return flags


class ResNet3d(nn.Module):
    """3D ResNet-50/101 trunk without classifier; `forward` returns the res5 map (B, C, T', H', W').

    depth: 50 | 101 (standard stage depths); `layers`/`widths`/`stem.width` override the shape (the CPU-sized
    `resnet3d_tiny`). stem: StemSpec fields (width, kernel, stride, pool_kernel, pool_stride).
    spatial_strides / temporal_strides: per stage (res2..res5), applied by the first block's conv2 and shortcut.
    inflate: per stage, 0/1 or a 0/1 list per block — blocks with a temporal kernel; inflate_style: "3x1x1"
    (conv1 (3,1,1), SlowOnly) or "3x3x3" (conv2 3×3×3). zero_init_residual: each block's last BN starts at γ=0
    (the block starts as its shortcut; the identity path keeps γ learning). pretrained: null | imagenet |
    a torchvision-format 2D (inflated on load) or 3D state dict. pool_after_res2: a temporal max-pool (2,1,1)
    stride (2,1,1) after res2, halving T (MMAction2's I3D, its ``pool2``; off by default).
    """

    def __init__(
        self,
        depth: int = 50,
        layers: Sequence[int] | None = None,
        widths: Sequence[int] = (64, 128, 256, 512),
        stem: StemSpec | Mapping | None = None,
        spatial_strides: Sequence[int] = (1, 2, 2, 2),
        temporal_strides: Sequence[int] = (1, 1, 1, 1),
        inflate: Sequence[int | Sequence[int]] = (0, 0, 1, 1),
        inflate_style: str = "3x1x1",
        zero_init_residual: bool = False,
        pretrained: str | None = None,
        pool_after_res2: bool = False,
    ):
        super().__init__()
        if depth not in LAYERS:
            raise ValueError(f"backbone.depth={depth} not supported by ResNet3d; choose one of {sorted(LAYERS)}")
        if inflate_style not in INFLATE_STYLES:
            raise ValueError(f"backbone.inflate_style={inflate_style!r}; choose one of {list(INFLATE_STYLES)}")
        layers = list(layers or LAYERS[depth])
        for key, value in (("widths", widths), ("spatial_strides", spatial_strides),
                           ("temporal_strides", temporal_strides)):
            if len(value) != len(layers):
                raise ValueError(f"backbone.{key} needs one entry per stage ({len(layers)}), got {list(value)}")
        self.depth = depth
        self.stem_spec = spec = StemSpec.build(stem)
        self.conv1 = nn.Conv3d(3, spec.width, spec.kernel, spec.stride, _pad(spec.kernel), bias=False)
        self.bn1 = nn.BatchNorm3d(spec.width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d(spec.pool_kernel, spec.pool_stride, _pad(spec.pool_kernel))
        inplanes = spec.width
        self.stage_channels: list[int] = []
        flags = _block_flags(inflate, layers)
        for i, planes in enumerate(widths):
            blocks = []
            for j, inflated in enumerate(flags[i]):
                ss, ts = (spatial_strides[i], temporal_strides[i]) if j == 0 else (1, 1)
                downsample = None
                if ss != 1 or ts != 1 or inplanes != planes * Bottleneck3d.expansion:
                    downsample = nn.Sequential(
                        nn.Conv3d(inplanes, planes * Bottleneck3d.expansion, 1, (ts, ss, ss), bias=False),
                        nn.BatchNorm3d(planes * Bottleneck3d.expansion))
                blocks.append(Bottleneck3d(inplanes, planes, ss, ts, inflated, inflate_style, downsample))
                inplanes = planes * Bottleneck3d.expansion
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            self.stage_channels.append(inplanes)
        self.out_channels = inplanes
        # MMAction2's I3D halves T after res2 (its pool2); identity otherwise, no parameters either way
        self.pool_after_res2 = nn.MaxPool3d((2, 1, 1), (2, 1, 1)) if pool_after_res2 else nn.Identity()
        self._init_weights(zero_init_residual)
        if pretrained:
            load_pretrained(self, pretrained)

    def _init_weights(self, zero_init_residual: bool) -> None:
        kaiming_conv_unit_bn(self, (nn.Conv3d,), (nn.BatchNorm3d,))
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck3d):
                    nn.init.zeros_(m.bn3.weight)

    @property
    def stages(self) -> list[nn.Sequential]:
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, T, H, W) → the res2..res5 outputs, each (B, C_i, T_i, H_i, W_i)."""
        outputs = []
        x = self.stem(x)
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i == 0:
                x = self.pool_after_res2(x)
            outputs.append(x)
        return outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_stages(x)[-1]


def inflate_state_dict(own: Mapping[str, torch.Tensor], state2d: Mapping[str, torch.Tensor]
                       ) -> dict[str, torch.Tensor]:
    """2D weights → this 3D network's shapes: a 4D conv kernel (O, I, k, k) for a 5D (O, I, t, k, k) key
    becomes t copies divided by t; everything else is copied as is. Keys that do not fit stay as they are
    (the caller's fit check then names them)."""
    inflated = {}
    for key, value in state2d.items():
        target = own.get(key)
        if target is not None and value.dim() == 4 and target.dim() == 5 and value.shape[:2] == target.shape[:2]:
            t = target.shape[2]
            value = value.unsqueeze(2).expand(-1, -1, t, -1, -1).clone() / t
        inflated[key] = value
    return inflated


def load_pretrained(model: ResNet3d, source: str, skip: Sequence[str] = ()) -> None:
    """Load torchvision ResNet weights (2D: inflated; or an already 3D state dict) into every key of
    `model` not under a `skip` prefix; fc is ignored. A key that is missing or does not fit raises a
    ValueError listing them."""
    state = {k: v for k, v in read_backbone_weights(source, model.depth).items() if not k.startswith("fc.")}
    own = model.state_dict()
    count = load_fitting(model, inflate_state_dict(own, state), f"pretrained weights {source}",
                         f"3D ResNet-{model.depth} inflated from a torchvision ResNet-{model.depth}", skip=skip)
    log.info("loaded %d pretrained tensors (2D kernels inflated over time) from %s", count, source)
