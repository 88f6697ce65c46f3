"""TCM network: TSM-ResNet (or plain TSN-ResNet) with Temporal Correlation Modules after res2–res5 (spec B).

The network is TSM (spec A) whose backbone runs a ``TemporalCorrelationModule`` on the output of each stage
listed in ``positions`` (res numbers 2..5; the paper's model: ``[3]``, one TCM after res3). Each block maps
(N·T, C, H, W) to the same shape, ``out = x + TAM(MTDM(x))``, with C read from the backbone's
``stage_channels`` (512 after res3 of R50/R101, 128 of R18) and the correlation patch P from the position
(15, 15, 7, 3 after res2..res5, spec B1) unless ``patch_size`` is given. The blocks live in
``backbone.after_stage[str(res − 1)]`` (keys that never collide with ImageNet's, so ``pretrained: imagenet``
loads every backbone tensor and only the TCMs and fc start from scratch); ``tcm_blocks`` names them by res.

Ablations (paper Tables III, VII, VIII):

* ``positions: []`` is TSM itself (the "baseline" row); several positions stack several TCMs.
* ``temporal_shift: false`` builds the TCM on a plain TSN backbone (no shift).
* ``use_mtdm`` / ``use_tam`` switch the two halves of the block (see ``TemporalCorrelationModule``):
  with MTDM off the TAM reads the appearance features x directly and its first stage becomes a single
  1×1 conv C→16 + BN + ReLU (the three grouped 3×3 convs pair up the six motion channels, which has no
  meaning for C appearance channels, and a 3×3 conv on C channels would dwarf the rest of the TAM); with
  TAM off the six motion channels are projected back to C by a 1×1 conv + BN (no temporal attention);
  with both off the block is the identity (the "none" row equals the baseline up to the seed).

Init (``init``, spec B6): ``official`` (default, the official code's) or ``identity``: each block adds its
branch through a zero-initialised learnable per-channel gain, so the network starts as the TSM it extends and
every TCM parameter still trains (see ``TemporalCorrelationModule``).

BN: partial BN (spec A5, off by default) freezes the backbone's pretrained BNs but never the TCMs' BNs,
which have no pretrained statistics (``TSN.partial_bn_norms``). Optimiser groups (spec A5/B9, in
``tempo.run.param_groups``): conv/fc weights lr×1 wd×1; biases lr×``bias_lr_mult`` (2 in
``conf/model/tcm.yaml``) wd 0; BN parameters lr×1 wd 0.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from tempo.models.backbones.resnet import ResNet
from tempo.models.blocks.tcm import TemporalCorrelationModule
from tempo.models.tsm import TSM
from tempo.models.weights import init_from_checkpoint

log = logging.getLogger(__name__)

#: Where a TCM may go, in res numbers (res2..res5 = backbone stages 1..4).
RES_POSITIONS = (2, 3, 4, 5)


def check_positions(positions: Sequence[int] | int) -> list[int]:
    """Validate `model.network.positions` (res numbers; a single int is one position) and return them sorted."""
    try:
        values = [int(positions)] if isinstance(positions, int) else [int(p) for p in positions]
    except (TypeError, ValueError):
        raise ValueError(f"model.network.positions must be a list of res numbers from {list(RES_POSITIONS)}, "
                         f"e.g. [3]; got {positions!r}") from None
    bad = [p for p in values if p not in RES_POSITIONS]
    if bad:
        raise ValueError(f"model.network.positions: {bad} not allowed; a TCM goes after res2, res3, res4 or res5, "
                         f"so use values from {list(RES_POSITIONS)} (e.g. [3] for the paper's model, [] for TSM)")
    if len(set(values)) != len(values):
        raise ValueError(f"model.network.positions lists a stage twice: {values}")
    return sorted(values)


class TCM(TSM):
    """TSM/TSN-ResNet + TCM blocks after the res stages in ``positions``; ``forward`` returns ``{"logits"}``.

    ``backbone``: ResNet factory (Hydra ``_partial_``); ``temporal_shift`` decides whether it gets the TSM
    shift. The TCM options (``patch_size`` … ``init``) are passed to every block
    (``TemporalCorrelationModule``). ``init_checkpoint``: a tempo checkpoint (Lightning ``.ckpt`` or a state
    dict of this network) whose weights initialise everything but ``fc`` — fine-tuning from Kinetics.
    """

    def __init__(self, backbone: Callable[..., ResNet], num_classes: int, num_segments: int = 8,
                 dropout: float = 0.5, partial_bn: bool = False, positions: Sequence[int] = (3,),
                 temporal_shift: bool = True, patch_size: int | None = None, reduced_channels: int = 64,
                 use_mtdm: bool = True, use_tam: bool = True, init: str = "official",
                 shift_fold_div: int = 8, shift_every_n_blocks: int = 1, init_checkpoint: str | None = None):
        self.positions = check_positions(positions)
        self.temporal_shift = temporal_shift
        super().__init__(backbone, num_classes, num_segments, dropout, partial_bn, shift_fold_div,
                         shift_every_n_blocks)
        for res in self.positions:
            block = TemporalCorrelationModule(
                num_segments, self.backbone.stage_channels[res - 2], position=res - 1, patch_size=patch_size,
                reduced_channels=reduced_channels, use_mtdm=use_mtdm, use_tam=use_tam,
                init=init)
            self.backbone.insert_after_stage(res - 1, block)
        if init_checkpoint:
            init_from_checkpoint(self, init_checkpoint, hint="same backbone, positions and TCM options needed")

    def backbone_kwargs(self) -> dict:
        return super().backbone_kwargs() if self.temporal_shift else {}

    @property
    def tcm_blocks(self) -> dict[str, TemporalCorrelationModule]:
        """The TCM blocks by position name, e.g. ``{"res3": ...}``."""
        return {f"res{int(stage) + 1}": m for stage, m in self.backbone.after_stage.items()
                if isinstance(m, TemporalCorrelationModule)}

    def profile_blocks(self) -> dict[str, TemporalCorrelationModule]:
        """``tempo.profile`` hook: one report row per TCM, e.g. ``{"TCM@res3": ...}``."""
        return {f"TCM@{res}": block for res, block in self.tcm_blocks.items()}

    def extra_repr(self) -> str:
        return f"positions={self.positions}, temporal_shift={self.temporal_shift}"
