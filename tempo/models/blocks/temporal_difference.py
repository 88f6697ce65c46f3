"""TDPN's temporal-difference modules (spec C2, C3), reconstructed from TDN's long- and short-term modules.

* ``GlobalTemporalDifference`` (C2, low level, inside the res2/res3 bottlenecks): feature differences to the
  next and the previous frame, a multi-scale excitation from each, and ``Y = X + X ⊙ (A_f + A_b) / 2``.
* ``LocalTemporalDifference`` (C3, high level): a separate 2D CNN on stacked RGB differences
  (``rgb_differences``), added to the RGB res4 and res5 outputs through zero-γ laterals, so a network that
  switches it on starts exactly as the one without it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from tempo.models.backbones.resnet import BasicBlock, Bottleneck
from tempo.models.weights import load_fitting, read_backbone_weights


class MultiScaleExcitation(nn.Module):
    """M(D) = (D + Up(BN_a(Conv_a(AvgPool(D)))) + BN_b(Conv_b(D))) / 3, then A = sigmoid(BN_e(Conv_e(M))) − 0.5."""

    def __init__(self, reduced: int, channels: int, zero_init: bool = True):
        super().__init__()
        self.conv_a = nn.Conv3d(reduced, reduced, (1, 3, 3), padding=(0, 1, 1), bias=False)
        self.bn_a = nn.BatchNorm3d(reduced)
        self.conv_b = nn.Conv3d(reduced, reduced, (1, 3, 3), padding=(0, 1, 1), bias=False)
        self.bn_b = nn.BatchNorm3d(reduced)
        self.conv_e = nn.Conv3d(reduced, channels, 1, bias=False)
        self.bn_e = nn.BatchNorm3d(channels)
        if zero_init:
            # γ = β = 0 ⇒ A = sigmoid(0) − 0.5 = 0: the identity. The sigmoid (no ReLU) keeps dA/dγ non-zero.
            nn.init.zeros_(self.bn_e.weight)
            nn.init.zeros_(self.bn_e.bias)

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        size = d.shape[-2:]
        coarse = self.bn_a(self.conv_a(F.avg_pool3d(d, (1, 2, 2), (1, 2, 2))))
        coarse = F.interpolate(coarse, size=(d.shape[2], *size), mode="nearest")
        multi = (d + coarse + self.bn_b(self.conv_b(d))) / 3
        return torch.sigmoid(self.bn_e(self.conv_e(multi))) - 0.5


class GlobalTemporalDifference(nn.Module):
    """Spec C2 on X (B, C, T, H, W) → same shape. c = C / reduction channels carry the differences.

    Z = BN(1×1×1 conv C→c)(X), Zs = depthwise (1,3,3) conv of Z; Df[t] = Z[t] − Zs[t+1] (Df[T−1] = 0),
    Db[t] = Z[t] − Zs[t−1] (Db[0] = 0). Both go through the same ``MultiScaleExcitation`` (one batch, so
    the BNs see both); swapping them is exactly what reversing time does, so G(flip x) = flip G(x).
    """

    def __init__(self, channels: int, reduction: int = 16, zero_init: bool = True):
        super().__init__()
        reduced = max(1, channels // reduction)
        self.channels, self.reduced = channels, reduced
        self.reduce = nn.Conv3d(channels, reduced, 1, bias=False)
        self.bn = nn.BatchNorm3d(reduced)
        self.smooth = nn.Conv3d(reduced, reduced, (1, 3, 3), padding=(0, 1, 1), groups=reduced, bias=False)
        self.excitation = MultiScaleExcitation(reduced, channels, zero_init)

    def differences(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(Df, Db), each (B, c, T, H, W); Df[..., T−1, :, :] = Db[..., 0, :, :] = 0."""
        z = self.bn(self.reduce(x))
        zs = self.smooth(z)
        zero = torch.zeros_like(z[:, :, :1])
        forward = torch.cat([z[:, :, :-1] - zs[:, :, 1:], zero], dim=2)
        backward = torch.cat([zero, z[:, :, 1:] - zs[:, :, :-1]], dim=2)
        return forward, backward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        forward, backward = self.differences(x)
        attention = self.excitation(torch.cat([forward, backward], dim=0))
        a_f, a_b = attention.unflatten(0, (2, -1))  # not chunk: torch.export keeps the batch dynamic
        return x + x * (0.5 * a_f + 0.5 * a_b)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, reduced={self.reduced}"


def rgb_differences(video: torch.Tensor, num_differences: int = 4) -> torch.Tensor:
    """(B, 3, T, H, W) → (B·T, 3·n, H, W): for frame t the n differences I[t+k+1] − I[t+k],
    k = −n/2 .. n/2 − 1, frame indices clamped to [0, T−1] (so differences past the clip's edges are 0).
    Row b·T + t is frame t of clip b; channels are difference-major (k, then RGB)."""
    if num_differences < 1 or num_differences % 2:
        raise ValueError(f"num_differences must be a positive even number, got {num_differences} "
                         "(model.network.local_num_differences)")
    b, c, t, h, w = video.shape
    frames = torch.arange(t, device=video.device)
    diffs = []
    for k in range(-num_differences // 2, num_differences // 2):
        after = video[:, :, (frames + k + 1).clamp(0, t - 1)]
        before = video[:, :, (frames + k).clamp(0, t - 1)]
        diffs.append(after - before)
    stacked = torch.stack(diffs, dim=1)  # (B, n, 3, T, H, W)
    return stacked.permute(0, 3, 1, 2, 4, 5).reshape(b * t, num_differences * c, h, w)


class DifferenceCNN(nn.Module):
    """2D ResNet stem + the first ``len(planes)`` stages, torchvision key names, ``in_channels`` inputs."""

    def __init__(self, in_channels: int, stem_width: int, planes: Sequence[int], blocks: Sequence[int],
                 expansion: int = 4):
        super().__init__()
        block_cls = {4: Bottleneck, 1: BasicBlock}.get(expansion)
        if block_cls is None:
            raise ValueError(f"local module: backbone stages widen by ×{expansion}; only ×4 (bottleneck) "
                             "or ×1 (basic) blocks can be copied")
        self.conv1 = nn.Conv2d(in_channels, stem_width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        inplanes = stem_width
        for i, (width, n) in enumerate(zip(planes, blocks, strict=True)):
            layer = []
            for j in range(n):
                stride = 2 if i > 0 and j == 0 else 1
                downsample = None
                if stride != 1 or inplanes != width * expansion:
                    downsample = nn.Sequential(nn.Conv2d(inplanes, width * expansion, 1, stride, bias=False),
                                               nn.BatchNorm2d(width * expansion))
                layer.append(block_cls(inplanes, width, stride, downsample))
                inplanes = width * expansion
            self.add_module(f"layer{i + 1}", nn.Sequential(*layer))
        self.num_stages = len(planes)
        self.out_channels = inplanes
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(self.num_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return x

    def load_imagenet(self, source: str, depth: int = 50) -> int:
        """ImageNet (or a torchvision-format file) into the stem and stages; conv1's kernel averaged over
        RGB and replicated to every input channel (TDN, no rescale). Returns the number of tensors loaded."""
        keep = ("conv1.", "bn1.", *(f"layer{i + 1}." for i in range(self.num_stages)))
        state = {k: v for k, v in read_backbone_weights(source, depth).items() if k.startswith(keep)}
        if state.get("conv1.weight") is not None and state["conv1.weight"].dim() == 4:
            kernel = state["conv1.weight"].mean(dim=1, keepdim=True)
            state["conv1.weight"] = kernel.repeat(1, self.conv1.in_channels, 1, 1)
        return load_fitting(self, state, f"local module weights {source}",
                            f"ResNet-{depth} stem..res{self.num_stages + 1}")


def zero_gamma_bn(channels: int) -> nn.BatchNorm2d:
    """BN whose output starts at 0 (γ = β = 0). Only used where no ReLU follows, so γ still learns."""
    bn = nn.BatchNorm2d(channels)
    nn.init.zeros_(bn.weight)
    nn.init.zeros_(bn.bias)
    return bn


class LocalTemporalDifference(nn.Module):
    """Spec C3: H(I) = Up(CNN(Down(D(I)))) from the clip's stacked RGB differences, per frame.

    ``variant="low_resolution"`` (default, Eq. 1's order): the difference stack is average-pooled (Down) to
    4× the res5 grid (28² at 224²), CNN = stem + a copy of res2 runs there and lands on the res5 grid (7²);
    its output is nearest-upsampled (Up) to the res4 grid (×2) and added to res4 and res5 through 1×1 conv +
    zero-γ BN laterals (TDN's short-term module has the same ratio: the CNN's output is half the fused
    grid). ``variant="light"``: the same CNN on half-resolution differences (112²), its output average-
    pooled to the res4 and res5 grids (CNN first, pooled after; 16× the CNN MACs of ``low_resolution``).
    ``variant="deep"``: CNN = stem..res4 at half resolution, nearest-upsampled to the res4 grid, added to
    res4 only through a zero-γ BN (ours: without it the deep branch would change the pretrained network at
    init). The zero-γ BNs are not followed by a ReLU: after the first optimiser step γ ≠ 0 and every
    parameter of the branch learns. ``forward`` returns ``{"res4": …, "res5": …}`` (deep: res4 only).

    ``stem_width``/``planes``/``blocks``/``expansion`` copy the RGB backbone's shape (R50: 64, [64, 128,
    256], [3, 4, 6], 4); ``fuse_channels`` are the RGB res4 and res5 widths.
    """

    VARIANTS = ("low_resolution", "light", "deep")

    def __init__(self, stem_width: int, planes: Sequence[int], blocks: Sequence[int],
                 fuse_channels: Sequence[int], variant: str = "low_resolution", expansion: int = 4,
                 num_differences: int = 4, pretrained: str | None = None):
        super().__init__()
        if variant not in self.VARIANTS:
            raise ValueError(f"model.network.local_variant must be one of {self.VARIANTS}, got {variant!r}")
        self.variant, self.num_differences = variant, num_differences
        stages = 3 if variant == "deep" else 1
        self.cnn = DifferenceCNN(3 * num_differences, stem_width, planes[:stages], blocks[:stages], expansion)
        if pretrained:
            self.cnn.load_imagenet(pretrained)
        width = self.cnn.out_channels
        if variant != "deep":
            self.laterals = nn.ModuleDict({
                name: nn.Sequential(nn.Conv2d(width, channels, 1, bias=False), zero_gamma_bn(channels))
                for name, channels in zip(("res4", "res5"), fuse_channels, strict=True)})
        else:
            self.laterals = nn.ModuleDict({"res4": zero_gamma_bn(width)})
            if width != fuse_channels[0]:
                raise ValueError(f"deep local module gives {width} channels, res4 has {fuse_channels[0]}")

    def features(self, video: torch.Tensor, sizes: dict[str, tuple[int, int]]) -> torch.Tensor:
        """(B, 3, T, H, W) → CNN features (B·T, C', h, w) of the downsampled differences: pooled to 4× the
        res5 grid (low_resolution, so the stem's stride 4 lands on it) or by 2 (light, deep)."""
        differences = rgb_differences(video, self.num_differences)
        if self.variant == "low_resolution":
            h5, w5 = sizes["res5"]
            return self.cnn(F.adaptive_avg_pool2d(differences, (4 * h5, 4 * w5)))
        return self.cnn(F.avg_pool2d(differences, 2, 2))

    def addition(self, name: str, features: torch.Tensor, rgb: torch.Tensor) -> torch.Tensor:
        """What the branch adds to the RGB map ``rgb`` (B, C, T, h, w) of stage ``name`` ("res4"/"res5"),
        from ``features(video, sizes)``: light average-pools (= AvgPool 2 / 4 at 224²) before its lateral,
        low_resolution upsamples (nearest; ×2 to res4, ×1 to res5) after it — the same values as upsampling
        first (a 1×1 conv commutes with nearest upsampling, and an integer-factor copy keeps the BN's batch
        mean and variance), at a quarter of the lateral's MACs — and deep upsamples before its BN."""
        b, _, t, h, w = rgb.shape
        if self.variant == "light":
            y = self.laterals[name](F.adaptive_avg_pool2d(features, (h, w)))
        elif self.variant == "low_resolution":
            y = F.interpolate(self.laterals[name](features), size=(h, w), mode="nearest")
        else:
            y = self.laterals[name](F.interpolate(features, size=(h, w), mode="nearest"))
        return y.view(b, t, *y.shape[1:]).transpose(1, 2)

    @property
    def fused_stages(self) -> list[str]:
        """The RGB stages this branch adds to: ["res4", "res5"] (light) or ["res4"] (deep)."""
        return list(self.laterals)

    def forward(self, video: torch.Tensor, sizes: dict[str, tuple[int, int]]) -> dict[str, torch.Tensor]:
        """The additions for the RGB grids in ``sizes`` (``{"res4": (h4, w4), "res5": (h5, w5)}``), each
        (B, C, T, h, w); the deep variant only fills res4."""
        b, _, t = video.shape[:3]
        features = self.features(video, sizes)
        return {name: self.addition(name, features, features.new_empty(b, 1, t, *sizes[name]))
                for name in self.fused_stages}

    def extra_repr(self) -> str:
        return f"variant={self.variant}, num_differences={self.num_differences}"
