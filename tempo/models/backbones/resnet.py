"""2D ResNet (torchvision v1.5 layout and state-dict keys) with optional temporal shift.

Frames enter as (N·T, 3, H, W). With `num_segments` set, every `shift_every_n_blocks`-th
block of res2–res5 applies a `TemporalShift` on its residual branch before conv1 (TSM's
"residual shift", spec A3); the identity path stays unshifted. Modules can be inserted
after any stage through `after_stage` (TCM); their keys never collide with ImageNet's.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import nn

from tempo.models.blocks.temporal_shift import TemporalShift
from tempo.models.init import kaiming_conv_unit_bn
from tempo.models.weights import load_fitting, read_backbone_weights

log = logging.getLogger(__name__)

DEPTHS = {18: ("basic", [2, 2, 2, 2]), 34: ("basic", [3, 4, 6, 3]), 50: ("bottleneck", [3, 4, 6, 3]),
          101: ("bottleneck", [3, 4, 23, 3])}


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 shift: nn.Module | None = None):
        super().__init__()
        self.shift = shift
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn2

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.bn2(self.conv2(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        branch_in = x if self.shift is None else self.shift(x)
        return self.relu(self.residual(branch_in) + identity)


class Bottleneck(BasicBlock):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 shift: nn.Module | None = None):
        nn.Module.__init__(self)
        self.shift = shift
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.bn3(self.conv3(out))


class ResNet(nn.Module):
    """ResNet-18/34/50/101 trunk without fc; `forward` returns the res5 feature map.

    `layers`/`widths`/`stem_width` override the standard shape (e.g. the CPU-sized
    `resnet_tiny`). `pretrained`: None, "imagenet" (torchvision weights by URL) or a
    path to a torchvision-format state dict.
    """

    def __init__(
        self,
        depth: int = 50,
        layers: Sequence[int] | None = None,
        widths: Sequence[int] = (64, 128, 256, 512),
        stem_width: int = 64,
        block: str | None = None,
        pretrained: str | None = None,
        num_segments: int | None = None,
        shift_fold_div: int = 8,
        shift_every_n_blocks: int = 1,
    ):
        super().__init__()
        if depth not in DEPTHS:
            raise ValueError(f"ResNet depth {depth} not supported; choose one of {sorted(DEPTHS)}")
        kind, default_layers = DEPTHS[depth]
        block_cls = {"basic": BasicBlock, "bottleneck": Bottleneck}[block or kind]
        self.depth = depth
        self.num_segments = num_segments
        self.conv1 = nn.Conv2d(3, stem_width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        inplanes = stem_width
        self.stage_channels: list[int] = []
        block_index = 0
        for i, (n, planes) in enumerate(zip(layers or default_layers, widths, strict=True)):
            blocks = []
            for j in range(n):
                stride = 2 if i > 0 and j == 0 else 1
                downsample = None
                if stride != 1 or inplanes != planes * block_cls.expansion:
                    downsample = nn.Sequential(
                        nn.Conv2d(inplanes, planes * block_cls.expansion, 1, stride, bias=False),
                        nn.BatchNorm2d(planes * block_cls.expansion),
                    )
                shift = None
                if num_segments and block_index % shift_every_n_blocks == 0:
                    shift = TemporalShift(num_segments, shift_fold_div)
                blocks.append(block_cls(inplanes, planes, stride, downsample, shift))
                inplanes = planes * block_cls.expansion
                block_index += 1
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            self.stage_channels.append(inplanes)
        self.out_channels = inplanes
        self.after_stage = nn.ModuleDict()
        self._init_weights()
        if pretrained:
            load_pretrained(self, pretrained)

    def _init_weights(self) -> None:
        kaiming_conv_unit_bn(self, (nn.Conv2d,), (nn.BatchNorm2d,))

    @property
    def stages(self) -> list[nn.Sequential]:
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    def insert_after_stage(self, stage: int, module: nn.Module) -> None:
        """Run `module` on the output of stage `stage` (1..4 = res2..res5)."""
        if not 1 <= stage <= 4:
            raise ValueError(f"stage must be 1..4 (res2..res5), got {stage}")
        self.after_stage[str(stage)] = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i, stage in enumerate(self.stages, start=1):
            x = stage(x)
            if str(i) in self.after_stage:
                x = self.after_stage[str(i)](x)
        return x


def load_pretrained(model: ResNet, source: str) -> None:
    """Load torchvision-format weights into every backbone key; fc is ignored.

    Fails with the list of mismatched keys, so a wrong file never half-loads silently.
    """
    state = {k: v for k, v in read_backbone_weights(source, model.depth).items() if not k.startswith("fc.")}
    count = load_fitting(model, state, f"pretrained weights {source}", f"ResNet-{model.depth}",
                         skip=("after_stage.",))
    log.info("loaded %d pretrained tensors from %s", count, source)
