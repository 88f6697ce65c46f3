"""Local spatial correlation volume (spec B3), in pure PyTorch.

For each pixel of feature map A, the dot products (over channels) with the pixels of feature map B in a
P×P window around the same position:

    out[m, i·P + j, y, x] = Σ_c A[m, c, y, x] · B[m, c, y + i − R, x + j − R],   R = (P − 1) / 2,

with zero contribution where the B index falls outside the map and no division by C. This is exactly
``SpatialCorrelationSampler(kernel_size=1, patch_size=P)(A, B)`` reshaped to (M, P², H, W), so channel
k = i·P + j has vertical displacement dy = i − R and horizontal displacement dx = j − R.

Two implementations that agree to float rounding:

* ``correlation_shifted_loop``: the spec's literal loop over the P² displacements on a zero-padded B.
  Simple and memory-light, but each displacement is an elementwise multiply plus a channel reduction
  (memory bound), so it is slow on CPU, in particular the backward.
* ``correlation_rows`` (default): one batched GEMM per *row* of displacements (fixed dy). For every image
  row y, the Gram matrix of A's row y against the zero-padded B row y + dy gives all horizontal offsets
  at once; the P diagonals we need are read back through a strided view. This does (W + 2R)/P times the
  necessary multiply-adds but in GEMMs, which is several times faster than the loop, forward and
  backward (see benchmarks/bench_correlation.py). A hand-written backward reuses one band buffer and
  accumulates gradients in place instead of letting autograd allocate P full-size zero tensors. Extra
  memory: row-major copies of A and of zero-padded B plus one (H·M, W, W + 2R) Gram buffer; B is never
  unfolded over the batch.

The computation always runs in float32 (float64 stays float64), with autocast disabled, because the
match estimation downstream multiplies these values by 100 before a softmax (spec B3, last sentence).
On GPUs, TF32 matmuls (``torch.backends.cuda.matmul.allow_tf32``) would also apply to these GEMMs.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import FunctionCtx, once_differentiable

CorrelationMethod = Literal["rows", "loop"]


def capturing_graph() -> bool:
    """Whether torch.export (also under the ONNX exporter) or torch.jit.trace is recording the forward: the
    hand-written autograd Functions then give way to plain ops computing the same values."""
    return torch.compiler.is_exporting() or torch.jit.is_tracing()


def _check_inputs(a: torch.Tensor, b: torch.Tensor, patch_size: int) -> None:
    if a.dim() != 4 or a.shape != b.shape:
        raise ValueError(f"expected two (M, C, H, W) tensors of equal shape, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    if patch_size < 1 or patch_size % 2 == 0:
        raise ValueError(f"patch_size must be a positive odd integer, got {patch_size}")


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float16/bfloat16/float32 → float32; float64 stays float64."""
    return torch.promote_types(dtype, torch.float32)


def _band_view(gram: torch.Tensor, patch_size: int) -> torch.Tensor:
    """View (..., W, W + 2R) → (..., W, P) with ``out[..., x, j] = gram[..., x, x + j]``.

    In the flattened last two dims, element (x, x + j) sits at x·(W + 2R + 1) + j, so the band is a sliding
    window of length P with step W + 2R + 1; it fits exactly W times. ``unfold`` keeps this a view, and
    writing into the view writes into ``gram`` (used by the backward).
    """
    padded_width = gram.shape[-1]
    return gram.flatten(-2).unfold(-1, patch_size, padded_width + 1)


class _RowCorrelation(torch.autograd.Function):
    """Row-of-displacements GEMM correlation; returns the pixel-major layout (H, M, W, P, P)."""

    @staticmethod
    def forward(ctx: FunctionCtx, a: torch.Tensor, b: torch.Tensor, patch_size: int,
                relu: bool) -> torch.Tensor:
        m, c, h, w = a.shape
        r = (patch_size - 1) // 2
        # Image rows outermost, so that rows y..y+H of padded B (fixed dy) merge with the batch into one
        # contiguous bmm batch of H·M matrices without a copy.
        a_rows = a.permute(2, 0, 3, 1).contiguous()  # (H, M, W, C)
        b_rows = F.pad(b, (r, r, r, r)).permute(2, 0, 1, 3).contiguous()  # (H + 2R, M, C, W + 2R)
        a_flat = a_rows.view(h * m, w, c)
        gram = a.new_empty(h * m, w, w + 2 * r)  # reused for every dy: fresh large buffers are costly on CPU
        band = _band_view(gram, patch_size).view(h, m, w, patch_size)
        out = a.new_empty(h, m, w, patch_size, patch_size)
        for i in range(patch_size):
            torch.bmm(a_flat, b_rows[i:i + h].view(h * m, c, w + 2 * r), out=gram)
            out[:, :, :, i] = band
        if relu:
            out.relu_()
        ctx.save_for_backward(a_rows, b_rows, out if relu else None)
        ctx.patch_size = patch_size
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None, None]:
        a_rows, b_rows, relu_out = ctx.saved_tensors
        patch_size: int = ctx.patch_size
        r = (patch_size - 1) // 2
        h, m, w, c = a_rows.shape
        with torch.autocast(device_type=a_rows.device.type, enabled=False):
            grad_out = grad_out.to(a_rows.dtype)
            if relu_out is not None:  # ReLU's own backward kernel: one pass, no mask tensor
                grad_out = torch.ops.aten.threshold_backward(grad_out, relu_out, 0.0)
            # One (W, W + 2R) buffer per (row, sample): zero off the band, overwritten on the band per dy.
            grad_gram = a_rows.new_zeros(h * m, w, w + 2 * r)
            grad_band = _band_view(grad_gram, patch_size).view(h, m, w, patch_size)
            grad_a = torch.zeros_like(a_rows).view(h * m, w, c)
            grad_b = torch.zeros_like(b_rows)
            a_t = a_rows.view(h * m, w, c).transpose(1, 2)
            for i in range(patch_size):
                grad_band.copy_(grad_out[:, :, :, i])
                b_i = b_rows[i:i + h].view(h * m, c, w + 2 * r)
                grad_a.baddbmm_(grad_gram, b_i.transpose(1, 2))
                grad_b[i:i + h].view(h * m, c, w + 2 * r).baddbmm_(a_t, grad_gram)
            grad_a = grad_a.view(h, m, w, c).permute(1, 3, 0, 2)
            grad_b = grad_b.permute(1, 2, 0, 3)[:, :, r:r + h, r:r + w]
        return grad_a, grad_b, None, None


def _row_correlation_graph(a: torch.Tensor, b: torch.Tensor, patch_size: int) -> torch.Tensor:
    """`_RowCorrelation.forward` as plain out-of-place ops, for graph export: the same GEMM per row of
    displacements, the band read with a gather instead of a strided view. (M, C, H, W) × 2 → (H, M, W, P, P)."""
    m, c, h, w = a.shape
    r = (patch_size - 1) // 2
    a_flat = a.permute(2, 0, 3, 1).reshape(h * m, w, c)
    b_rows = F.pad(b, (r, r, r, r)).permute(2, 0, 1, 3)  # (H + 2R, M, C, W + 2R)
    positions = torch.arange(w, device=a.device)
    band = (positions[:, None] + torch.arange(patch_size, device=a.device)[None]).expand(h * m, w, patch_size)
    rows = [torch.gather(torch.bmm(a_flat, b_rows[i:i + h].reshape(h * m, c, w + 2 * r)), 2, band)
            for i in range(patch_size)]
    return torch.stack(rows, dim=2).view(h, m, w, patch_size, patch_size)


def correlation_pixel_major(a: torch.Tensor, b: torch.Tensor, patch_size: int,
                             relu: bool = False) -> torch.Tensor:
    """Correlation in the layout (H, M, W, P²) used internally by the match estimation.

    Same values as ``correlation_rows`` (``out.permute(1, 3, 0, 2)`` gives (M, P², H, W)); the P² axis is
    contiguous, which makes the per-pixel max/softmax/reductions downstream cheap and avoids a transpose.
    ``relu=True`` applies the MTDM's ReLU in place (saves a full-size tensor). Inputs are computed in
    float32 (float64 kept) with autocast disabled.
    """
    _check_inputs(a, b, patch_size)
    dtype = compute_dtype(a.dtype)
    with torch.autocast(device_type=a.device.type, enabled=False):
        if capturing_graph():  # no out= buffers, strided band views or autograd.Function in an exported graph
            out = _row_correlation_graph(a.to(dtype), b.to(dtype), patch_size)
            out = out.relu() if relu else out
        else:
            out = _RowCorrelation.apply(a.to(dtype), b.to(dtype), patch_size, relu)
    h, m, w = out.shape[:3]
    return out.view(h, m, w, patch_size * patch_size)


def correlation_rows(a: torch.Tensor, b: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Fast correlation (one GEMM per row of displacements): (M, C, H, W) × 2 → (M, P², H, W)."""
    return correlation_pixel_major(a, b, patch_size).permute(1, 3, 0, 2).contiguous()


def correlation_shifted_loop(a: torch.Tensor, b: torch.Tensor, patch_size: int) -> torch.Tensor:
    """The spec's reference loop (B3): P² shifted slices of zero-padded B, multiply and sum over C."""
    _check_inputs(a, b, patch_size)
    dtype = compute_dtype(a.dtype)
    h, w = a.shape[-2:]
    r = (patch_size - 1) // 2
    with torch.autocast(device_type=a.device.type, enabled=False):
        a = a.to(dtype)
        b_pad = F.pad(b.to(dtype), (r, r, r, r))
        planes = [(a * b_pad[:, :, i:i + h, j:j + w]).sum(1)
                  for i in range(patch_size) for j in range(patch_size)]
        return torch.stack(planes, dim=1)


class CorrelationVolume(nn.Module):
    """``SpatialCorrelationSampler(kernel_size=1, patch_size=P)`` in pure PyTorch (spec B3).

    forward(a, b): a, b (M, C, H, W) → (M, P², H, W), channel k = i·P + j ↔ (dy, dx) = (i − R, j − R).
    ``method="rows"`` (default) is the GEMM-per-row-of-displacements variant, ``"loop"`` the literal
    shifted-slice loop; they agree to float rounding. Output dtype is float32 (float64 for float64 input).
    """

    def __init__(self, patch_size: int, method: CorrelationMethod = "rows") -> None:
        super().__init__()
        if patch_size < 1 or patch_size % 2 == 0:
            raise ValueError(f"patch_size must be a positive odd integer, got {patch_size}")
        if method not in ("rows", "loop"):
            raise ValueError(f"unknown correlation method {method!r}")
        self.patch_size = patch_size
        self.method = method

    @property
    def radius(self) -> int:
        return (self.patch_size - 1) // 2

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if self.method == "loop":
            return correlation_shifted_loop(a, b, self.patch_size)
        return correlation_rows(a, b, self.patch_size)

    def extra_repr(self) -> str:
        return f"patch_size={self.patch_size}, method={self.method!r}"
