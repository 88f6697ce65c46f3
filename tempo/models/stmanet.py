"""ST-MANet (spec D): a 3D ResNet-50 with temporal and spatial deep aggregation, multi-level fusion and
diversity losses.

Per stage i = 2..5 (res2..res5 of ``ResNet3d``; the ST-MANet backbone config is
``conf/backbone/resnet3d50_stmanet.yaml``), with Z^i the stage output:

* TDA (``tda.enabled``): ``TemporalDeepAggregation`` gives ΔT^i and the next link Z_TDA^i of a chain that starts
  from the stem, Z_TDA^1 = ReLU(BN(Conv1×1×1(Z^1))) [D20];
* SDA (``sda.enabled``): ``SpatialDeepAggregation`` gives ΔS^i;
* Z̄^i = Z^i + ΔT^i + ΔS^i feeds stage i+1 [D28] (``fusion.literal_eq8``: + Z^i once more when TDA is on);
* at the last stage Ẑ = Z̄ + Z_TDA (the un-pooled last TDA, [D29], ``fusion.fuse_last_tda``).

Head: with ``fusion.mf`` (multi-level fusion) GAP of every level Z̄², …, Ẑ⁵ concatenated → Linear(3840 → K);
without, Linear(2048 → K) on GAP(Ẑ⁵). ``head_from_stage`` = s ∈ {2..5} puts the head on stage s for the
per-stage study: stages after s are not built, the last TDA/fusion happen at s, MF fuses stages 2..s.

Training outputs ``"regularizers": {"div_t": L_t, "div_s": L_s}`` (spec D.5; a term is left out when its
module is off or fewer than two stages have attention), weighted by ``tempo.run.losses.MultiTermLoss``.
All switches off is exactly the plain 3D ResNet + GAP + fc.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from tempo.models.backbones.resnet3d import ResNet3d
from tempo.models.blocks.diversity import REDUCTIONS, SpatialAttention, spatial_diversity, temporal_diversity
from tempo.models.blocks.st_aggregation import SpatialDeepAggregation, TemporalDeepAggregation, tda_chain_stem
from tempo.models.weights import init_from_checkpoint

#: Stages carrying attention (res numbers); stage i is the backbone's layer{i-1}.
STAGES = (2, 3, 4, 5)


@dataclass
class Features:
    """What one forward pass computed, stage by stage (lists start at stage 2; ``chain`` at Z_TDA^1)."""

    stage_outputs: list[torch.Tensor] = field(default_factory=list)  # Z^i
    levels: list[torch.Tensor] = field(default_factory=list)  # Z̄^i (Ẑ at the last stage)
    chain: list[torch.Tensor] = field(default_factory=list)  # Z_TDA^1, Z_TDA^2, ...
    temporal: list[torch.Tensor] = field(default_factory=list)  # A_t^i (B, T_i, T_i)
    spatial: list[SpatialAttention] = field(default_factory=list)  # A_s^i (B, H_i W_i, H'_i W'_i)


def check_head_stage(stage: int) -> int:
    if stage not in STAGES:
        raise ValueError(f"model.network.head_from_stage={stage!r}: use one of {list(STAGES)} "
                         "(5 = the paper's network; lower values cut the network after that stage)")
    return int(stage)


@dataclass
class TDAOptions:
    """Temporal deep aggregation (spec D.2; ``model.network.tda``): ``enabled`` is Table 4's TDA switch;
    ``reduction`` φ/ϖ → C/reduction channels [D21], ``scaled`` logits / √d [D22], ``eps_order`` [D23],
    ``delta_groups`` / ``zero_init_delta`` of ε' [D25]."""

    enabled: bool = True
    reduction: int = 16
    scaled: bool = True
    eps_order: str = "pool_conv"
    delta_groups: int = 8
    zero_init_delta: bool = True


@dataclass
class SDAOptions:
    """Spatial deep aggregation (spec D.3; ``model.network.sda``): ``enabled`` is Table 4's SDA switch;
    ``reduction`` θ_q/θ_k → C/reduction channels [D26], ``kv_pool`` on the stages in ``kv_pool_stages``
    [D27], ``scaled`` logits / √(C'·T)."""

    enabled: bool = True
    reduction: int = 8
    kv_pool: int = 2
    kv_pool_stages: Sequence[int] = (2, 3)
    scaled: bool = True


@dataclass
class FusionOptions:
    """How the levels combine (``model.network.fusion``): ``mf`` is Table 4's multi-level fusion head;
    ``fuse_last_tda`` Ẑ⁵ = Z̄⁵ + Z_TDA⁵ [D29]; ``literal_eq8`` Z̄ = 2Z + ΔT + ΔS [D28]."""

    mf: bool = True
    fuse_last_tda: bool = True
    literal_eq8: bool = False


def options(cls: type, value, key: str):
    """A config group (mapping, or the dataclass itself) → ``cls``; unknown keys fail naming ``key``."""
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if not isinstance(value, Mapping):
        raise ValueError(f"model.network.{key} must be a group of options ({', '.join(cls.__dataclass_fields__)}),"
                         f" got {value!r}: e.g. model.network.{key}.enabled=false")
    unknown = set(value) - set(cls.__dataclass_fields__)
    if unknown:
        raise ValueError(f"model.network.{key}: unknown option(s) {sorted(unknown)}; "
                         f"options are {list(cls.__dataclass_fields__)}")
    return cls(**value)


def init_aggregation(module: nn.Module) -> None:
    """Kaiming initialisation (the paper: "initialized using the Kaiming initialization strategy") of every
    conv of the aggregation blocks in ``module``: fan_out for the convs feeding a BN (ε, ε', chain stem; BN
    1/0, ε''s zero γ kept), fan_in — torch's default mode of He et al.'s rule — for the attention
    projections (φ, ϖ, θ_q, θ_k): with fan_out their logits are so large at the paper's widths that the
    softmax rows start near one-hot (tests/test_stmanet_model.py shows both)."""
    for name, m in module.named_modules():
        if isinstance(m, nn.Conv3d):
            projection = name.endswith(("query", "key"))
            nn.init.kaiming_normal_(m.weight, mode="fan_in" if projection else "fan_out", nonlinearity="relu")


class STMANet(nn.Module):
    """ST-MANet; ``forward(video (B, 3, T, H, W)) -> {"logits", "regularizers" (training)}``.

    backbone: ``ResNet3d`` factory (Hydra ``_partial_``). ``tda`` / ``sda`` / ``fusion``: the options of each
    module (``TDAOptions``, ``SDAOptions``, ``FusionOptions``, or mappings of their fields, as Hydra passes
    ``conf/model/stmanet.yaml``'s groups). ``head_from_stage``: the per-stage study; ``dropout`` [D34];
    ``div_reduction`` [D31]; ``init_checkpoint``: a tempo checkpoint initialising every tensor but ``fc``.
    """

    def __init__(self, backbone: Callable[..., ResNet3d], num_classes: int, tda: TDAOptions | Mapping | None = None,
                 sda: SDAOptions | Mapping | None = None, fusion: FusionOptions | Mapping | None = None,
                 head_from_stage: int = 5, dropout: float = 0.0, div_reduction: str = "sum",
                 init_checkpoint: str | None = None):
        super().__init__()
        tda, sda = options(TDAOptions, tda, "tda"), options(SDAOptions, sda, "sda")
        fusion = options(FusionOptions, fusion, "fusion")
        self.backbone = backbone()
        if not isinstance(self.backbone, ResNet3d):
            raise ValueError(f"model=stmanet needs a 3D backbone, got {type(self.backbone).__name__}: add "
                             "backbone=resnet3d50_stmanet (the paper's) or backbone=resnet3d_stmanet_tiny (CPU runs)")
        self.head_stage = check_head_stage(head_from_stage)
        if div_reduction not in REDUCTIONS:
            raise ValueError(f"model.network.div_reduction={div_reduction!r}: use one of {list(REDUCTIONS)}")
        if not set(sda.kv_pool_stages) <= set(STAGES):
            raise ValueError(f"model.network.sda.kv_pool_stages={list(sda.kv_pool_stages)}: stages are {list(STAGES)}")
        self.use_tda, self.use_sda, self.use_mf = bool(tda.enabled), bool(sda.enabled), bool(fusion.mf)
        self.fuse_last_tda, self.literal_eq8 = fusion.fuse_last_tda, fusion.literal_eq8
        self.div_reduction = div_reduction
        self.stage_numbers = [i for i in STAGES if i <= self.head_stage]
        self._drop_unused_stages()
        channels = {i: self.backbone.stage_channels[i - 2] for i in self.stage_numbers}
        if self.use_tda:
            self.tda_stem = tda_chain_stem(self.backbone.stem_spec.width, channels[2] // 2)
            self.tda_blocks = nn.ModuleDict({
                str(i): TemporalDeepAggregation(
                    c, c // 2, last=i == self.head_stage, reduction=tda.reduction, scaled=tda.scaled,
                    eps_order=tda.eps_order, delta_groups=tda.delta_groups, zero_init_delta=tda.zero_init_delta,
                    chain_output=i < self.head_stage or self.fuse_last_tda)
                for i, c in channels.items()})
            init_aggregation(self.tda_stem)
            init_aggregation(self.tda_blocks)
        if self.use_sda:
            self.sda_blocks = nn.ModuleDict({
                str(i): SpatialDeepAggregation(c, reduction=sda.reduction, scaled=sda.scaled,
                                               kv_pool=sda.kv_pool if i in sda.kv_pool_stages else 1)
                for i, c in channels.items()})
            init_aggregation(self.sda_blocks)
        head_channels = sum(channels.values()) if self.use_mf else channels[self.head_stage]
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(head_channels, num_classes)
        if init_checkpoint:
            init_from_checkpoint(self, init_checkpoint, hint="same backbone and ST-MANet switches needed")

    def _drop_unused_stages(self) -> None:
        """Stages after the head's are never run: replace them so they hold no parameters."""
        for i in STAGES:
            if i > self.head_stage:
                setattr(self.backbone, f"layer{i - 1}", nn.Identity())

    @property
    def stages(self) -> list[nn.Module]:
        return self.backbone.stages[: len(self.stage_numbers)]

    def forward_features(self, video: torch.Tensor) -> Features:
        out = Features()
        x = self.backbone.stem(video)
        chain = None
        if self.use_tda:
            chain = self.tda_stem(x)
            out.chain.append(chain)
        for i, stage in zip(self.stage_numbers, self.stages, strict=True):
            z = stage(x)
            out.stage_outputs.append(z)
            level = z
            if self.use_tda:
                delta_t, chain, attention = self.tda_blocks[str(i)](z, chain)
                level = level + delta_t + (z if self.literal_eq8 else 0)
                if chain is not None:
                    out.chain.append(chain)
                out.temporal.append(attention)
            if self.use_sda:
                sda = self.sda_blocks[str(i)]
                delta_s, attention = sda(z)
                level = level + delta_s
                h, w = z.shape[-2:]
                out.spatial.append(SpatialAttention(attention, (h, w), sda.key_grid(h, w)))
            if i == self.head_stage and self.use_tda and self.fuse_last_tda:
                level = level + chain
            out.levels.append(level)
            x = level
        return out

    def regularizers(self, features: Features) -> dict[str, torch.Tensor]:
        terms = {}
        if len(features.temporal) > 1:
            terms["div_t"] = temporal_diversity(features.temporal, self.div_reduction)
        if len(features.spatial) > 1:
            terms["div_s"] = spatial_diversity(features.spatial, self.div_reduction)
        return terms

    def head(self, features: Features) -> torch.Tensor:
        levels = features.levels if self.use_mf else features.levels[-1:]
        pooled = torch.cat([level.mean(dim=(2, 3, 4)) for level in levels], dim=1)
        return self.fc(self.dropout(pooled))

    def forward(self, video: torch.Tensor) -> dict:
        features = self.forward_features(video)
        outputs: dict = {"logits": self.head(features)}
        if self.training:
            regularizers = self.regularizers(features)
            if regularizers:
                outputs["regularizers"] = regularizers
        return outputs

    def extra_repr(self) -> str:
        return (f"tda={self.use_tda}, sda={self.use_sda}, mf={self.use_mf}, head_from_stage={self.head_stage}, "
                f"fuse_last_tda={self.fuse_last_tda}, literal_eq8={self.literal_eq8}, "
                f"div_reduction={self.div_reduction!r}")
