"""TCM's match estimation (spec B4): a P×P correlation vector → soft-argmax displacement (u, v) + confidence.

A Gaussian prior around the (first) argmax sharpens the softmax over the window; forward and backward are
fused by hand (``_MatchEstimation``) so that a full-resolution correlation costs two (L, P²) buffers.
"""

from __future__ import annotations

import torch
from torch.autograd.function import FunctionCtx, once_differentiable

from tempo.models.blocks.correlation import capturing_graph

TIE_ULPS = 16  # argmax tie tolerance in units of the dtype's eps (see first_argmax)


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
