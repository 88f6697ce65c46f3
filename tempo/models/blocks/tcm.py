"""Temporal Correlation Module (TCM, spec B1–B8), following the official code rather than the paper (B7).

TCM sits after a ResNet stage, maps (N·T, C, H, W) to the same shape and adds motion cues to the
appearance features: ``out = x + TAM(MTDM(x))`` (B1, B6).

* ``MultiScaleTemporalDynamics`` (MTDM, B2 + B4) reduces the channels, L2-normalises them, correlates
  consecutive frames (short scale, pairs (F_k, F_{k+1})) and the first frame with every later frame (long
  scale, pairs (F_0, F_{k+1})) inside a P×P window (``correlation.py``, B3) and turns each correlation
  vector into a soft-argmax displacement (u, v) plus a confidence: 6 motion channels per frame.
* ``TemporalAttention`` (TAM, B5) lifts the 6 motion channels back to C channels with a small
  grouped/depthwise-separable conv stack and re-weights each channel over time with ``TemporalECA``
  (``temporal_attention.py``); the soft-argmax match estimation is in ``motion_match.py``.
* ``tcm_correlation_macs`` gives the correlation's multiply-adds (B8); the MTDM reports them to
  ``tempo.profile`` through its ``analytic_macs`` hook, in place of the GEMMs a FLOP counter sees.

Row n·T + t of every (N·T, ...) tensor is frame t of video n (A1).
"""

from __future__ import annotations

import torch
from torch import nn

from tempo.models.blocks.correlation import compute_dtype, correlation_pixel_major
from tempo.models.blocks.motion_match import match_estimation
from tempo.models.blocks.temporal_attention import (
    MOTION_CHANNELS,
    TemporalAttention,
    conv_bn_relu,
    init_tcm_weights,
)

#: Correlation patch size P for a TCM after res2, res3, res4, res5 (positions 1..4, spec B1).
PATCH_SIZE_BY_POSITION = (15, 15, 7, 3)
#: TCM initialisations (spec B6): the official code's, or identity at init through a zero gain that learns.
INIT_OPTIONS = ("official", "identity")
L2_EPS = 1e-6


def tcm_correlation_macs(num_segments: int, patch_size: int, channels: int, h: int, w: int,
                         batch: int = 1) -> int:
    """Multiply-adds of the MTDM correlation, 2·(T−1)·P²·C·H·W·N (two scales × T−1 pairs, spec B8).

    This is the cost of the algorithm as specified; FLOP counters based on module hooks miss it because
    it is not a conv. (The implementation shares pair (F_0, F_1) between the scales, so it evaluates
    2T−3 pairs, and its GEMM formulation does (W + 2R)/P times more raw multiply-adds.)
    """
    return 2 * (num_segments - 1) * patch_size * patch_size * channels * h * w * batch


def patch_size_for_position(position: int) -> int:
    if position not in (1, 2, 3, 4):
        raise ValueError(f"position must be 1..4 (after res2..res5), got {position}")
    return PATCH_SIZE_BY_POSITION[position - 1]

def l2_normalize_channels(x: torch.Tensor, eps: float = L2_EPS) -> torch.Tensor:
    """v / sqrt(Σ_c v_c² + eps), eps inside the sqrt (B2 step 4), so zero features stay zero."""
    return x * torch.rsqrt(x.square().sum(1, keepdim=True) + eps)


class MultiScaleTemporalDynamics(nn.Module):
    """MTDM (spec B2, B4): (N·T, C, H, W) → (N·T, 6, H, W) = [s_u, s_v, s_conf, l_u, l_v, l_conf].

    Short scale: pairs (F_k, F_{k+1}); long scale: pairs (F_0, F_{k+1}), k = 0..T−2; index T−1 repeats
    index T−2. Index 0 is the same pair (F_0, F_1) for both scales, so it is computed once and shared
    (bit-identical channels, 2T−3 correlations instead of 2T−2). Runs in float32 even under autocast.
    ``use_reduction=False`` drops the 1×1 conv/BN/ReLU and correlates the input features directly.
    """

    def __init__(self, num_segments: int, in_channels: int, patch_size: int, reduced_channels: int = 64,
                 sigma: float = 5.0, temperature: float = 0.01, use_reduction: bool = True) -> None:
        super().__init__()
        if num_segments < 2:
            raise ValueError(f"MTDM needs at least 2 segments, got {num_segments}")
        if patch_size < 3 or patch_size % 2 == 0:
            raise ValueError(f"patch_size must be an odd integer ≥ 3, got {patch_size}")
        self.num_segments = num_segments
        self.in_channels = in_channels
        self.patch_size = patch_size
        self.sigma = sigma
        self.inv_temperature = 1.0 / temperature
        self.reduce = conv_bn_relu(in_channels, reduced_channels) if use_reduction else nn.Identity()
        self.corr_channels = reduced_channels if use_reduction else in_channels
        init_tcm_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nt, _, h, w = x.shape
        t = self.num_segments
        if nt % t:
            raise ValueError(f"batch {nt} is not a multiple of num_segments={t}")
        n = nt // t
        with torch.autocast(device_type=x.device.type, enabled=False):
            feats = l2_normalize_channels(self.reduce(x.to(compute_dtype(x.dtype))))
            first, second = self._frame_pairs(feats.view(n, t, -1, h, w))
            corr = correlation_pixel_major(first, second, self.patch_size, relu=True)  # (H, n(2T−3), W, P²)
            motion = match_estimation(corr, self.patch_size, self.sigma, self.inv_temperature)
        motion = motion.permute(1, 3, 0, 2).reshape(n, 2 * t - 3, 3, h, w)
        short = motion[:, :t - 1]
        long = torch.cat([motion[:, :1], motion[:, t - 1:]], dim=1)
        out = torch.cat([self._repeat_last(short), self._repeat_last(long)], dim=2)  # (n, T, 6, H, W)
        return out.view(nt, MOTION_CHANNELS, h, w)

    def analytic_macs(self, input_shape: torch.Size) -> dict[str, int]:
        """``tempo.profile`` hook: the correlation's MACs as specified (B8) replace the GEMMs the counter sees."""
        nt, _, h, w = input_shape
        batch = nt // self.num_segments
        return {"correlation": tcm_correlation_macs(self.num_segments, self.patch_size, self.corr_channels, h, w,
                                                    batch)}

    @staticmethod
    def _frame_pairs(feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(n, T, C, H, W) → A, B of shape (n·(2T−3), C, H, W): short pairs k=0..T−2, then long k=1..T−2."""
        n, t = feats.shape[:2]
        first = torch.cat([feats[:, :t - 1], feats[:, :1].expand(n, t - 2, *feats.shape[2:])], dim=1)
        second = torch.cat([feats[:, 1:], feats[:, 2:]], dim=1)
        return first.flatten(0, 1), second.flatten(0, 1)

    @staticmethod
    def _repeat_last(pairs: torch.Tensor) -> torch.Tensor:
        """(n, T−1, ...) → (n, T, ...) with index T−1 a copy of index T−2 (B2 step 8)."""
        return torch.cat([pairs, pairs[:, -1:]], dim=1)

    def extra_repr(self) -> str:
        return (f"num_segments={self.num_segments}, patch_size={self.patch_size}, sigma={self.sigma}, "
                f"temperature={1.0 / self.inv_temperature}")


class TemporalCorrelationModule(nn.Module):
    """TCM (spec B1, B6): (N·T, C, H, W) → same shape, ``out = x + TAM(MTDM(x))``.

    position 1..4 = after res2..res5 selects P from (15, 15, 7, 3) unless ``patch_size`` is given; the
    default, position 2, is the TCM after res3.

    ``init`` (spec B6):

    * ``"official"`` (default): the official code's init, no zero init; the block is not the identity at init.
    * ``"identity"``: ``out = x + g ⊙ branch(x)`` with a learnable per-channel gain ``branch_gain`` g = 0 at
      init, so the block is exactly the identity at init and still learns: the first backward gives g a
      non-zero gradient (Σ grad·branch), and once an optimiser step has moved g off 0 every branch parameter
      gets one too. (Zeroing the TAM's last BN instead kills the branch for good: a ReLU follows it, so its
      output and every gradient stay 0.)

    Ablation switches (the branch added to x):

    * ``use_mtdm=True, use_tam=True``: TAM(MTDM(x)) (the TCM).
    * ``use_mtdm=False``: TAM(x); the TAM's first stage becomes a 1×1 conv in_channels→16 + BN + ReLU
      instead of the motion-pair grouped convs (see ``TemporalAttention``); the rest is unchanged.
    * ``use_tam=False``: BN(Conv1×1 6→C(MTDM(x))), a linear projection of the motion channels back to C
      (no ReLU, so the residual can also be negative).
    * both off: no branch, the module is the identity ("none" ablation row) and has no parameters.
    """

    def __init__(self, num_segments: int, in_channels: int, position: int = 2, patch_size: int | None = None,
                 reduced_channels: int = 64, use_mtdm: bool = True, use_tam: bool = True,
                 init: str = "official") -> None:
        super().__init__()
        if init not in INIT_OPTIONS:
            raise ValueError(f"model.network.init must be one of {list(INIT_OPTIONS)} (TCM init, spec B6), "
                             f"got {init!r}")
        self.num_segments = num_segments
        self.in_channels = in_channels
        self.reduced_channels = reduced_channels
        self.patch_size = patch_size if patch_size is not None else patch_size_for_position(position)
        self.use_mtdm = use_mtdm
        self.use_tam = use_tam
        self.init = init
        self.mtdm = (MultiScaleTemporalDynamics(num_segments, in_channels, self.patch_size, reduced_channels)
                     if use_mtdm else None)
        self.tam: TemporalAttention | None = None
        self.projection: nn.Sequential | None = None
        if use_tam:
            self.tam = TemporalAttention(num_segments, in_channels,
                                         in_channels=MOTION_CHANNELS if use_mtdm else in_channels)
        elif use_mtdm:
            self.projection = nn.Sequential(nn.Conv2d(MOTION_CHANNELS, in_channels, 1, bias=False),
                                            nn.BatchNorm2d(in_channels))
            init_tcm_weights(self.projection)
        has_branch = use_mtdm or use_tam
        self.branch_gain = (nn.Parameter(torch.zeros(in_channels))
                            if init == "identity" and has_branch else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mtdm is None and self.tam is None:
            return x
        branch = self.mtdm(x) if self.mtdm is not None else x
        branch = self.tam(branch) if self.tam is not None else self.projection(branch)
        if self.branch_gain is not None:
            return torch.addcmul(x, branch.to(x.dtype), self.branch_gain.to(x.dtype)[:, None, None])
        # In place on the branch's fresh output: saves one full-size tensor (nothing saved it for backward).
        return branch.to(x.dtype).add_(x)

    def correlation_macs(self, h: int, w: int, batch: int = 1) -> int:
        """The analytic correlation term (B8) for inputs of spatial size h×w; 0 without MTDM."""
        if self.mtdm is None:
            return 0
        return self.mtdm.analytic_macs(torch.Size((batch * self.num_segments, self.in_channels, h, w)))["correlation"]

    def extra_repr(self) -> str:
        return (f"num_segments={self.num_segments}, in_channels={self.in_channels}, "
                f"patch_size={self.patch_size}, use_mtdm={self.use_mtdm}, use_tam={self.use_tam}, init={self.init}")
