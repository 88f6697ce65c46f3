"""Sparse spatial attention (Zhou et al. 2022; spec B): from the class response maps of a clip, build a
discriminative and a complementary saliency map per frame and resample each frame so that salient areas
are magnified (learning-to-zoom), giving V_dis and V_com at input resolution.

B.1 (no gradient, ``ResponsePeaks`` + ``PeakSplit``): per-frame class response maps (CRMs) from the
classifier weights, the entropy gate over the top-5 classes, bilinear up-sampling to the G×G saliency grid,
min–max normalisation, local-maximum peaks above the map mean, and the random split of peaks into the
discriminative set D and the complementary set C (Eq. 5).

B.2 (differentiable in β1, β2 only, ``SparseSaliency`` + ``SaliencyResampler``): one Gaussian per peak
with σ_k = |β|·√s_k·G (the corrected Eq. 6), saliency ``Q = b0 + Σ A_k`` (Eq. 7), and the saliency →
sampling-grid transform of Learning to Zoom with fixed (non-trainable) coordinate and kernel buffers,
then ``grid_sample``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

EVAL_SPLITS = ("fixed", "extreme", "random")
ENTROPY_MODES = ("raw", "normalized")
SETS = ("discriminative", "complementary")


def class_response_maps(features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Per-frame CRMs ``M[b,t,s] = Σ_c W[s,c]·X[b,c,t] + b[s]``: (B, C, T, h, w) → (B, T, S, h, w).
    ``M.mean((-2, -1))`` equals the classifier applied to each frame's spatially pooled features (Eq. 1)."""
    maps = torch.einsum("bcthw,sc->btshw", features, weight)
    return maps if bias is None else maps + bias.view(1, 1, -1, 1, 1)


def top5_entropy(probs: torch.Tensor, normalized: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Entropy of the top-5 (or top-S) class probabilities (N, S) → (entropy (N,), classes (N, k)).
    ``raw``: −Σ p_k ln p_k of the un-renormalised probabilities (S3N); ``normalized``: of p̃ = p/Σp, / ln k."""
    top, classes = probs.topk(min(5, probs.shape[-1]), dim=-1)
    if normalized:
        top = top / top.sum(-1, keepdim=True)
    entropy = -(top * top.clamp_min(1e-12).log()).sum(-1)
    if normalized:
        entropy = entropy / math.log(max(top.shape[-1], 2))
    return entropy, classes


def min_max_normalize(maps: torch.Tensor, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-map min–max normalisation of (N, H, W) → ([0, 1] maps, valid (N,)); flat maps (range < eps)
    are not valid: they get no peaks, hence a uniform saliency (the identity resampling)."""
    low = maps.flatten(1).amin(1).view(-1, 1, 1)
    span = maps.flatten(1).amax(1).view(-1, 1, 1) - low
    valid = span.view(-1) >= eps
    return (maps - low) / span.clamp_min(eps), valid


def find_peaks(maps: torch.Tensor, window: int = 3, max_peaks: int = 16, min_score: float = 0.01,
               valid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Local maxima of normalised maps (N, H, W) (PRM rule, S3N's mean filter).

    A pixel is a peak when it is the first maximum (raster order) of its ``window``² neighbourhood (the map
    padded with −inf) and not below its map's mean. At most ``max_peaks`` per map, highest first [D6].
    Returns ``coords`` (N, K, 2) as (row, col), ``scores`` (N, K) clamped to ≥ ``min_score``, ``mask`` (N, K).
    """
    n, h, w = maps.shape
    pad = window // 2
    padded = F.pad(maps.unsqueeze(1), (pad, pad, pad, pad), value=float("-inf"))
    _, argmax = F.max_pool2d(padded, window, stride=1, return_indices=True)
    rows = torch.arange(h, device=maps.device).view(h, 1) + pad
    cols = torch.arange(w, device=maps.device).view(1, w) + pad
    own_index = rows * (w + 2 * pad) + cols
    is_peak = (argmax.view(n, h, w) == own_index) & (maps >= maps.flatten(1).mean(1).view(n, 1, 1))
    if valid is not None:
        is_peak &= valid.view(n, 1, 1)
    ranked = torch.where(is_peak, maps, torch.full_like(maps, -1.0)).flatten(1)
    k = min(max_peaks, h * w)
    values, flat = ranked.topk(k, dim=1)
    mask = values > -1.0
    coords = torch.stack([flat // w, flat % w], dim=-1)
    return coords, values.clamp_min(min_score) * mask, mask


class ResponsePeaks(nn.Module):
    """Spec B.1 steps 1–4: CRMs → entropy gate → G×G normalised map → peaks (no gradient).

    ``delta`` [D5]: 0.2 nats on the raw top-5 entropy; ``entropy="normalized"`` uses Ĥ = H(p̃)/ln 5 with
    its own threshold (0.2/ln 5 ≈ 0.124 is the matching value)."""

    def __init__(self, grid_size: int = 31, delta: float = 0.2, entropy: str = "raw", window: int = 3,
                 max_peaks: int = 16, min_score: float = 0.01):
        super().__init__()
        if entropy not in ENTROPY_MODES:
            raise ValueError(f"attention.peaks.entropy must be one of {ENTROPY_MODES}, got {entropy!r}")
        if window < 1 or window % 2 == 0 or max_peaks < 1 or grid_size < 2:
            raise ValueError("attention.peaks: window must be odd ≥ 1, max_peaks ≥ 1, grid_size ≥ 2")
        self.grid_size, self.delta, self.entropy = grid_size, delta, entropy
        self.window, self.max_peaks, self.min_score = window, max_peaks, min_score

    def response(self, features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """The gated response map R per frame: (B, C, T, h, w) → (B·T, h, w)."""
        maps = class_response_maps(features, weight, bias).flatten(0, 1)           # (N, S, h, w)
        entropy, classes = top5_entropy(maps.mean((-2, -1)).softmax(-1), self.entropy == "normalized")
        chosen = maps.gather(1, classes[:, :, None, None].expand(-1, -1, *maps.shape[-2:]))
        top1_only = (entropy < self.delta).view(-1, 1, 1)
        return torch.where(top1_only, chosen[:, 0], chosen.sum(1))

    @torch.no_grad()
    def forward(self, features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> dict:
        response = self.response(features.detach(), weight.detach(), None if bias is None else bias.detach())
        grid = F.interpolate(response.unsqueeze(1).float(), size=(self.grid_size,) * 2, mode="bilinear",
                             align_corners=True).squeeze(1)
        normalized, valid = min_max_normalize(grid)
        coords, scores, mask = find_peaks(normalized, self.window, self.max_peaks, self.min_score, valid)
        return {"map": normalized, "coords": coords, "scores": scores, "mask": mask}


class PeakSplit(nn.Module):
    """Eq. 5: peak k is discriminative when s_k ≥ φ_k, else complementary; the top peak is always D.

    Training: φ ~ U(0, 1) per peak, frame and iteration [D7]. Evaluation [D8]: ``fixed`` (φ = ``eval_phi``),
    ``extreme`` (S3N test mode: D = the top peak, C = the lowest) or ``random``. For the first
    ``warmup_all_peaks_iters`` training forward passes every peak goes to both sets (S3N warm-up; counted
    in passes because the network does not see the epoch)."""

    def __init__(self, eval_split: str = "fixed", eval_phi: float = 0.5, warmup_all_peaks_iters: int = 0):
        super().__init__()
        if eval_split not in EVAL_SPLITS:
            raise ValueError(f"attention.split.eval_split must be one of {EVAL_SPLITS}, got {eval_split!r}")
        self.eval_split, self.eval_phi = eval_split, eval_phi
        self.warmup_all_peaks_iters = warmup_all_peaks_iters
        self.register_buffer("iterations", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def forward(self, scores: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, K) scores (highest first) and mask → (discriminative, complementary) masks."""
        if self.training:
            self.iterations += 1
            if int(self.iterations) <= self.warmup_all_peaks_iters:
                return mask.clone(), mask.clone()
        mode = "random" if self.training else self.eval_split
        if mode == "extreme":
            first = torch.zeros_like(mask)
            first[:, 0] = mask[:, 0]
            last = torch.zeros_like(mask)
            count = mask.sum(1)
            rows = torch.nonzero(count > 1).squeeze(1)
            last[rows, count[rows] - 1] = True
            return first, last
        phi = torch.rand_like(scores) if mode == "random" else torch.full_like(scores, self.eval_phi)
        discriminative = (scores >= phi) & mask
        discriminative[:, 0] |= mask[:, 0]
        return discriminative, mask & ~discriminative

    def extra_repr(self) -> str:
        return f"eval_split={self.eval_split}, eval_phi={self.eval_phi}"


def gaussian_peaks(coords: torch.Tensor, scores: torch.Tensor, mask: torch.Tensor, beta: torch.Tensor,
                   grid_size: int, complementary: bool = False, eps: float = 1e-8) -> torch.Tensor:
    """Σ_k A_k over the masked peaks (Eq. 6 corrected): A_k = w_k·exp(−|p − p_k|² / (2σ_k²)),
    σ_k = |β|·√s_k·G, w_k = s_k (discriminative) or 1/s_k (complementary). → (N, G, G)."""
    axis = torch.arange(grid_size, device=scores.device, dtype=scores.dtype)
    dy = axis.view(1, 1, -1, 1) - coords[..., 0, None, None].to(scores.dtype)
    dx = axis.view(1, 1, 1, -1) - coords[..., 1, None, None].to(scores.dtype)
    scores = torch.where(mask, scores, torch.ones_like(scores))  # padded slots: finite, then weighted 0
    sigma_sq = (beta * grid_size) ** 2 * scores[..., None, None]
    weight = (1.0 / scores if complementary else scores) * mask
    return (weight[..., None, None] * torch.exp(-(dx**2 + dy**2) / (2 * sigma_sq + eps))).sum(1)


class SparseSaliency(nn.Module):
    """Learnable Gaussian widths β1 (discriminative), β2 (complementary) [D9] and saliency maps
    Q = b0 + Σ_{k∈set} A_k (Eq. 7) [D11]. An empty set gives the uniform map b0 (identity zoom)."""

    def __init__(self, beta1: float = 0.08, beta2: float = 0.2, base: float = 0.09):
        super().__init__()
        if base <= 0:
            raise ValueError(f"attention.saliency.base must be > 0 (it keeps the zoom denominators non-zero), "
                             f"got {base}")
        self.beta1 = nn.Parameter(torch.tensor(float(beta1)))
        self.beta2 = nn.Parameter(torch.tensor(float(beta2)))
        self.base = base

    def forward(self, coords: torch.Tensor, scores: torch.Tensor, discriminative: torch.Tensor,
                complementary: torch.Tensor, grid_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        q_dis = self.base + gaussian_peaks(coords, scores, discriminative, self.beta1, grid_size)
        q_com = self.base + gaussian_peaks(coords, scores, complementary, self.beta2, grid_size, complementary=True)
        return q_dis.unsqueeze(1), q_com.unsqueeze(1)


class SaliencyResampler(nn.Module):
    """Learning-to-zoom resampler (spec B.2 steps 8–9): saliency (N, 1, G, G) → sampling grid → frames.

    Each grid point samples the saliency-weighted mean position of its neighbourhood (a fixed, unnormalised
    Gaussian k of ``fwhm`` over a (2·pad+1)² window, replicate padding), so salient areas get more samples and
    are magnified: ``g = 2·conv(Qp·P, k) / conv(Qp, k) − 1``. Since P is linear, ``conv(Qp·P, k)`` is evaluated
    as ``P_centre·conv(Qp, k) + conv(Qp, k·offset)``: the same numbers and cost, but float32 keeps the identity
    exact to ~1e-7 instead of ~1e-4 (no large, nearly cancelling sums). The coordinate and kernel tensors are
    buffers [D12]. ``grid_sample`` pads with the border [D13]; the grid is a convex combination of positions in
    [−1, 1] (and clamped to it), so no padded pixel ever gets a weight: the padding mode cannot change the
    output, and is no option (issue 21: options that change nothing)."""

    def __init__(self, grid_size: int = 31, pad: int = 30, fwhm: float = 13.0):
        super().__init__()
        if grid_size < 2 or pad < 0 or fwhm <= 0:
            raise ValueError("attention.zoom: grid_size ≥ 2, pad ≥ 0 and fwhm > 0 needed")
        self.grid_size, self.pad = grid_size, pad
        # P at the window centres, (x, y) in [0, 1]: the identity grid before the 2·… − 1
        # float64 buffers, cast to the input's dtype when used: a float64 run is exact to ~1e-15
        centres = torch.arange(grid_size, dtype=torch.float64) / (grid_size - 1)
        self.register_buffer("centres", torch.stack([centres.view(1, -1).expand(grid_size, -1),
                                                     centres.view(-1, 1).expand(-1, grid_size)]), persistent=False)
        offsets = torch.arange(2 * pad + 1, dtype=torch.float64) - pad
        kernel = torch.exp(-4 * math.log(2) * (offsets.view(-1, 1) ** 2 + offsets.view(1, -1) ** 2) / fwhm**2)
        step = offsets / (grid_size - 1)  # P(window position) − P(centre)
        kernels = [kernel, kernel * step.view(1, -1), kernel * step.view(-1, 1)]  # den, x, y
        self.register_buffer("kernel", torch.stack(kernels).unsqueeze(1), persistent=False)

    def grid(self, saliency: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """(N, 1, G, G) saliency → (N, H, W, 2) ``grid_sample`` grid (x, y) in [−1, 1].

        At least float32 and outside autocast: a bf16 grid would be off by ~1e-2 (a few pixels)."""
        with torch.autocast(saliency.device.type, enabled=False):
            return self._grid(saliency.float() if saliency.dtype != torch.float64 else saliency, size)

    def _grid(self, saliency: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        padded = F.pad(saliency, (self.pad,) * 4, mode="replicate")
        den, nx, ny = F.conv2d(padded, self.kernel.to(padded.dtype)).unbind(1)
        centres = self.centres.to(padded.dtype)
        gx = (2 * (centres[0] + nx / den) - 1).clamp(-1, 1)
        gy = (2 * (centres[1] + ny / den) - 1).clamp(-1, 1)
        grid = F.interpolate(torch.stack([gx, gy], 1), size=size, mode="bilinear", align_corners=True)
        return grid.permute(0, 2, 3, 1)

    def forward(self, frames: torch.Tensor, saliency: torch.Tensor) -> torch.Tensor:
        """Resample frames (N, C, H, W) by their saliency maps (N, 1, G, G)."""
        grid = self.grid(saliency, frames.shape[-2:])
        # grid_sample wants one dtype: float32 at least (under autocast the frames may be bf16)
        dtype = torch.promote_types(frames.dtype, grid.dtype)
        return F.grid_sample(frames.to(dtype), grid.to(dtype), mode="bilinear", padding_mode="border",
                             align_corners=True).to(frames.dtype)


class SparseSpatialAttention(nn.Module):
    """Spec B: ``forward(video (B,3,T,H,W), features X (B,C,T,h,w), classifier W (S,C), b (S,))``
    → ``{"discriminative": V_dis, "complementary": V_com, ...}`` with V_* shaped like ``video``.

    Gradients reach β1/β2 (through the saliency, the grid and ``grid_sample``), never X or W."""

    def __init__(self, peaks: ResponsePeaks | None = None, split: PeakSplit | None = None,
                 saliency: SparseSaliency | None = None, zoom: SaliencyResampler | None = None):
        super().__init__()
        self.peaks = peaks or ResponsePeaks()
        self.split = split or PeakSplit()
        self.saliency = saliency or SparseSaliency()
        self.zoom = zoom or SaliencyResampler(self.peaks.grid_size)
        if self.zoom.grid_size != self.peaks.grid_size:
            raise ValueError(f"attention.peaks.grid_size={self.peaks.grid_size} and attention.zoom.grid_size="
                             f"{self.zoom.grid_size} must be equal (one saliency grid)")

    def forward(self, video: torch.Tensor, features: torch.Tensor, weight: torch.Tensor,
                bias: torch.Tensor | None = None, outputs: tuple[str, ...] = SETS) -> dict:
        """``outputs``: which zoomed clips to build (the sets of the active branches)."""
        b, c, t, h, w = video.shape
        if features.shape[0] != b or features.shape[2] != t:
            raise ValueError(f"sparse attention needs one feature map per input frame: video {tuple(video.shape)}, "
                             f"features {tuple(features.shape)} (no temporal down-sampling in the backbone)")
        if not outputs or set(outputs) - set(SETS):
            raise ValueError(f"outputs must be a non-empty subset of {SETS}, got {outputs}")
        peaks = self.peaks(features, weight, bias)
        dis_mask, com_mask = self.split(peaks["scores"], peaks["mask"])
        q_dis, q_com = self.saliency(peaks["coords"], peaks["scores"], dis_mask, com_mask, self.peaks.grid_size)
        saliency = {"discriminative": q_dis, "complementary": q_com}
        frames = video.transpose(1, 2).reshape(b * t, c, h, w)
        # every requested set in one resampling call: (len(outputs)·N, …)
        zoomed = self.zoom(frames.repeat(len(outputs), 1, 1, 1),
                           torch.cat([saliency[name] for name in outputs]).to(frames.dtype))
        per_set = zoomed.unflatten(0, (len(outputs), -1))  # not chunk: torch.export keeps the batch dynamic
        clips = {name: z.view(b, t, c, h, w).transpose(1, 2) for name, z in zip(outputs, per_set, strict=True)}
        return {**clips, "coords": peaks["coords"].view(b, t, -1, 2), "scores": peaks["scores"].view(b, t, -1),
                "discriminative_mask": dis_mask.view(b, t, -1), "complementary_mask": com_mask.view(b, t, -1),
                "response": peaks["map"].view(b, t, *peaks["map"].shape[1:])}
