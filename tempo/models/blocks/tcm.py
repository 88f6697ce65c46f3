"""Temporal Correlation Module (TCM, spec B1–B8), following the official code rather than the paper (B7).

TCM sits after a ResNet stage, maps (N·T, C, H, W) to the same shape and adds motion cues to the
appearance features: ``out = x + TAM(MTDM(x))`` (B1, B6).

* ``MultiScaleTemporalDynamics`` (MTDM, B2 + B4) reduces the channels, L2-normalises them, correlates
  consecutive frames (short scale, pairs (F_k, F_{k+1})) and the first frame with every later frame (long
  scale, pairs (F_0, F_{k+1})) inside a P×P window (``correlation.py``, B3) and turns each correlation
  vector into a soft-argmax displacement (u, v) plus a confidence: 6 motion channels per frame.
* ``TemporalAttention`` (TAM, B5) lifts the 6 motion channels back to C channels with a small
  grouped/depthwise-separable conv stack and re-weights each channel over time with ``TemporalECA``.
* ``tcm_correlation_macs`` gives the correlation's multiply-adds (B8); the MTDM reports them to
  ``tempo.profile`` through its ``analytic_macs`` hook, in place of the GEMMs a FLOP counter sees.

Row n·T + t of every (N·T, ...) tensor is frame t of video n (A1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import FunctionCtx, once_differentiable

from tempo.models.blocks.correlation import capturing_graph, compute_dtype, correlation_pixel_major

#: Correlation patch size P for a TCM after res2, res3, res4, res5 (positions 1..4, spec B1).
PATCH_SIZE_BY_POSITION = (15, 15, 7, 3)
#: Width of the TAM after its first stage, then 32 and 64 before the last 1×1 conv (spec B5).
TAM_WIDTHS = (16, 32, 64)
MOTION_CHANNELS = 6  # [s_u, s_v, s_conf, l_u, l_v, l_conf]
#: TCM initialisations (spec B6): the official code's, or identity at init through a zero gain that learns.
INIT_OPTIONS = ("official", "identity")
L2_EPS = 1e-6
TIE_ULPS = 16  # argmax tie tolerance in units of the dtype's eps (see first_argmax)


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


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 1,
                 groups: int = 1) -> nn.Sequential:
    """Bias-free conv ('same' padding) + BN + ReLU, the unit of every TCM conv (B2 step 1, B5)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, groups=groups,
                  bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def init_tcm_weights(module: nn.Module) -> None:
    """Official TCM init (B6): Kaiming-normal fan_out/ReLU convs, BN γ=1 β=0; Conv1d keeps its default."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def l2_normalize_channels(x: torch.Tensor, eps: float = L2_EPS) -> torch.Tensor:
    """v / sqrt(Σ_c v_c² + eps), eps inside the sqrt (B2 step 4), so zero features stay zero."""
    return x * torch.rsqrt(x.square().sum(1, keepdim=True) + eps)


def _offsets(patch_size: int, like: torch.Tensor) -> torch.Tensor:
    """(dy or dx) / R for patch-grid coordinates 0..P−1, i.e. −1..1."""
    radius = (patch_size - 1) // 2
    return (torch.arange(patch_size, device=like.device, dtype=like.dtype) - radius) / radius


def _separable_prior(index: torch.Tensor, patch_size: int, sigma: float, inv_temperature: float,
                     dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian prior of B4 step 3 around the argmax, as row (dy) and column (dx) factors, each (L, P).

    exp(−((b−ix)² + (a−iy)²)/(2σ²)) = row[a]·col[b]; 1/τ is folded into the row factor. Both factors are
    exactly 1 (row: 1/τ) at the argmax, so the largest logit is exactly conf/τ.
    """
    grid = torch.arange(patch_size, device=index.device)
    iy = torch.div(index, patch_size, rounding_mode="floor")
    ix = index - iy * patch_size
    scale = -1.0 / (2.0 * sigma * sigma)
    row = torch.exp((grid - iy[:, None]).square().to(dtype) * scale) * inv_temperature
    col = torch.exp((grid - ix[:, None]).square().to(dtype) * scale)
    return row, col


def first_argmax(corr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Max over dim 1 and the FIRST index whose value equals it up to float rounding (B4 steps 1–2).

    The official op ties exactly (e.g. constant features: every cosine is 1) and torch.max then returns
    the first index. Our GEMM correlation can differ in the last bits between window positions (measured:
    ≤ 2 ulps for identical vectors), so values within TIE_ULPS·eps (relative, at least absolute for values
    below 1) of the max count as ties. Genuine near-ties that close are decided by rounding noise in any
    implementation, so this costs no fidelity.
    """
    conf = corr.amax(dim=1)
    tolerance = TIE_ULPS * torch.finfo(corr.dtype).eps
    threshold = conf - tolerance * conf.abs().clamp(min=1.0)
    ties = corr >= threshold[:, None]
    if torch.compiler.is_exporting():
        ties = ties.to(torch.uint8)  # ONNX's ArgMax takes no bool input; the first maximum is the same
    index = torch.max(ties, dim=1).indices  # first True
    return conf, index


def _match_forward(corr: torch.Tensor, patch_size: int, sigma: float,
                   inv_temperature: float) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """B4 steps 1–6 forward: ((L, 3) [u, v, conf], the tensors `_MatchEstimation.backward` needs)."""
    p = patch_size
    conf, index = first_argmax(corr)
    row, col = _separable_prior(index, p, sigma, inv_temperature, corr.dtype)
    numer = corr.view(-1, p, p) * row[:, :, None]
    numer.mul_(col[:, None, :])
    numer.sub_((conf * inv_temperature)[:, None, None]).exp_()  # softmax numerator, max logit = conf/τ
    offsets = _offsets(p, corr)
    row_sums = numer.sum(2)  # (L, P) over dx
    col_sums = numer.sum(1)  # (L, P) over dy
    inv_total = row_sums.sum(1).reciprocal()
    flow = torch.stack([col_sums @ offsets, row_sums @ offsets], dim=1) * inv_total[:, None]  # [u, v]
    return torch.cat([flow, conf[:, None]], dim=1), (numer, row, col, flow, inv_total, index)


class _MatchEstimation(torch.autograd.Function):
    """B4 steps 1–6 on (L, P²) ReLU'd correlations → (L, 3) = [u, v, conf], with a hand-fused backward.

    Autograd over max/gather/mul/softmax/matmul would allocate five full (L, P²) tensors forward and as many
    backward; here the forward keeps one (the unnormalised softmax numerator e) and the backward one, using
    that the Gaussian prior and the displacement weights are separable over (dy, dx):
      flow = (Σ_k e_k·D_k) / Σ_k e_k,  ∂L/∂logit_k = e_k/Σe · (g_flow·D_k − g_flow·flow),
      ∂L/∂c_k = ∂L/∂logit_k · prior_k  (+ g_conf at the argmax; the Gaussian itself carries no gradient).
    """

    @staticmethod
    def forward(ctx: FunctionCtx, corr: torch.Tensor, patch_size: int, sigma: float,
                inv_temperature: float) -> torch.Tensor:
        out, saved = _match_forward(corr, patch_size, sigma, inv_temperature)
        ctx.save_for_backward(*saved)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_out: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        numer, row, col, flow, inv_total, index = ctx.saved_tensors
        p = numer.shape[-1]
        grad_flow = grad_out[:, :2] * inv_total[:, None]
        centre = (grad_flow * flow).sum(1)
        offsets = _offsets(p, numer)
        row_term = grad_flow[:, 1:2] * offsets - centre[:, None]  # g_v·dy − g·flow
        col_term = grad_flow[:, 0:1] * offsets  # g_u·dx
        grad = row_term[:, :, None] + col_term[:, None, :]
        grad.mul_(numer).mul_(row[:, :, None]).mul_(col[:, None, :])
        grad = grad.view(-1, p * p)
        grad.scatter_add_(1, index[:, None], grad_out[:, 2:3].contiguous())
        return grad, None, None, None


def match_estimation(corr: torch.Tensor, patch_size: int, sigma: float,
                     inv_temperature: float) -> torch.Tensor:
    """Spec B4 on a ReLU'd correlation with the P² axis last: (..., P²) → (..., 3) = [u, v, conf].

    conf is the max before the Gaussian; the argmax (first index on ties) centres a Gaussian prior that
    carries no gradient; u, v are the soft-argmax of softmax(g·c/τ) divided by R, so they lie in [−1, 1].
    """
    lead = corr.shape[:-1]
    flat = corr.reshape(-1, corr.shape[-1])
    if capturing_graph():  # the forward alone, as plain ops (an exported graph holds no autograd.Function)
        out = _match_forward(flat, patch_size, sigma, inv_temperature)[0]
    else:
        out = _MatchEstimation.apply(flat, patch_size, sigma, inv_temperature)
    return out.view(*lead, 3)


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


def _eca_weights(pooled: torch.Tensor, weight: torch.Tensor, num_segments: int) -> torch.Tensor:
    """(N·T, C) spatial means → (N·T, C) temporal weights sigmoid(conv1d_T(·)) (float32, or float64)."""
    nt, c = pooled.shape
    t = num_segments
    k = weight.shape[-1]
    series = pooled.view(nt // t, t, c).transpose(1, 2).reshape(-1, 1, t)  # (N·C, 1, T)
    att = torch.sigmoid(F.conv1d(series, weight.to(series.dtype), padding=(k - 1) // 2))
    return att.view(nt // t, c, t).transpose(1, 2).reshape(nt, c)


def _eca_scale(x: torch.Tensor, weight: torch.Tensor, num_segments: int) -> tuple[torch.Tensor, ...]:
    """(x · w(mean_HW x), the pooled features, w): `_TemporalECAScale`'s forward."""
    with torch.autocast(device_type=x.device.type, enabled=False):
        pooled = x.mean(dim=(2, 3), dtype=compute_dtype(x.dtype))
        att = _eca_weights(pooled, weight, num_segments).to(x.dtype)
    return x * att[:, :, None, None], pooled, att


class _TemporalECAScale(torch.autograd.Function):
    """out = x · w(mean_HW x), with a backward that touches the full-size tensors only twice.

    Plain autograd would allocate four full-size temporaries in the backward (grad·w, grad·x for the weight
    gradient, the mean's broadcast gradient and their sum); here one buffer first holds grad·x (summed
    for the weight gradient), then grad·w with the mean's gradient added in place. The small
    conv1d/sigmoid part is re-run under autograd in the backward. Weights are computed in float32 with
    autocast off.
    """

    @staticmethod
    def forward(ctx: FunctionCtx, x: torch.Tensor, weight: torch.Tensor, num_segments: int) -> torch.Tensor:
        out, pooled, att = _eca_scale(x, weight, num_segments)
        ctx.save_for_backward(x, weight, pooled, att)
        ctx.num_segments = num_segments
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        x, weight, pooled, att = ctx.saved_tensors
        nt, c, h, w = x.shape
        grad_x = grad_out * x  # scratch for Σ_hw grad·x, then reused for the input gradient
        grad_att = grad_x.sum(dim=(2, 3), dtype=compute_dtype(x.dtype))
        with torch.enable_grad(), torch.autocast(device_type=x.device.type, enabled=False):
            pooled = pooled.detach().requires_grad_()
            weight_ = weight.detach().requires_grad_()
            att_ = _eca_weights(pooled, weight_, ctx.num_segments)
            grad_pooled, grad_weight = torch.autograd.grad(att_, (pooled, weight_), grad_att.to(att_.dtype))
        grad_mean = (grad_pooled / (h * w)).to(x.dtype)[:, :, None, None]
        torch.mul(grad_out, att[:, :, None, None], out=grad_x).add_(grad_mean)
        return grad_x, grad_weight.to(weight.dtype), None


class TemporalECA(nn.Module):
    """Temporal ECA (spec B5): per channel, a sigmoid weight over time from a 1-D conv along T.

    The conv (one weight vector of length k, shared by every channel and video, zero padding, no bias)
    runs over the spatially averaged features; k follows the official code, ``kernel_size(T)``.
    """

    def __init__(self, num_segments: int) -> None:
        super().__init__()
        self.num_segments = num_segments
        k = self.kernel_size(num_segments)
        self.conv = nn.Conv1d(1, 1, k, padding=(k - 1) // 2, bias=False)

    @staticmethod
    def kernel_size(num_segments: int) -> int:
        """k = int(log2 T), plus 1 if even: 4→3, 8→3, 16→5, 32→5."""
        k = num_segments.bit_length() - 1  # floor(log2 T), exact for integers
        return k + 1 if k % 2 == 0 else k

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """(N·T, C, H, W) → temporal weights (N·C, T, 1, 1) in (0, 1), row n·C + c (plain autograd)."""
        nt, c = x.shape[:2]
        t = self.num_segments
        pooled = x.mean(dim=(2, 3)).view(nt // t, t, c).transpose(1, 2).reshape(-1, 1, t)  # (N·C, 1, T)
        return torch.sigmoid(self.conv(pooled)).view(-1, t, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] % self.num_segments:
            raise ValueError(f"batch {x.shape[0]} is not a multiple of num_segments={self.num_segments}")
        if capturing_graph():  # the forward alone, as plain ops (an exported graph holds no autograd.Function)
            return _eca_scale(x, self.conv.weight, self.num_segments)[0]
        return _TemporalECAScale.apply(x, self.conv.weight, self.num_segments)


class TemporalAttention(nn.Module):
    """TAM (spec B5): 6 motion channels → C_out channels, then temporal ECA; output is non-negative.

    Every conv is bias-free and followed by BN + ReLU. Stage 1 on the motion input is three grouped 3×3
    convs 6→6 (groups=3: channel pairs (s_u,s_v), (s_conf,l_u), (l_v,l_conf)) and a 1×1 6→16; stages 2–4
    are depthwise 3×3 + pointwise 1×1 with widths 16→32→64→C_out.

    ``in_channels != 6`` (the TCM's ``use_mtdm=False`` ablation, appearance features in): stage 1 is a
    single 1×1 conv in_channels→16 + BN + ReLU, because grouping by motion-channel pairs has no meaning
    there and a 3×3 conv on hundreds of channels would dwarf the rest of the TAM.
    """

    def __init__(self, num_segments: int, out_channels: int, in_channels: int = MOTION_CHANNELS) -> None:
        super().__init__()
        first, second, third = TAM_WIDTHS
        self.stage1 = self._first_stage(in_channels, first)
        self.stage2 = self._separable(first, second)
        self.stage3 = self._separable(second, third)
        self.stage4 = self._separable(third, out_channels)
        self.eca = TemporalECA(num_segments)
        init_tcm_weights(self)

    @staticmethod
    def _first_stage(in_channels: int, out_channels: int) -> nn.Sequential:
        if in_channels != MOTION_CHANNELS:
            return conv_bn_relu(in_channels, out_channels)
        grouped = [conv_bn_relu(MOTION_CHANNELS, MOTION_CHANNELS, 3, groups=3) for _ in range(3)]
        return nn.Sequential(*grouped, conv_bn_relu(MOTION_CHANNELS, out_channels))

    @staticmethod
    def _separable(in_channels: int, out_channels: int) -> nn.Sequential:
        return nn.Sequential(conv_bn_relu(in_channels, in_channels, 3, groups=in_channels),
                             conv_bn_relu(in_channels, out_channels))

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        return self.stage4[-1][1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.eca(self.stage4(self.stage3(self.stage2(self.stage1(x)))))


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
