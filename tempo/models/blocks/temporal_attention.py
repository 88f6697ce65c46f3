"""TCM's temporal attention module (TAM, spec B5) and the conv unit and init every TCM conv shares (B2, B6).

TAM lifts the MTDM's 6 motion channels back to C channels with a small grouped/depthwise-separable conv
stack and re-weights each channel over time with ``TemporalECA`` (an ECA-style 1-D conv across channels
of the temporally pooled features).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import FunctionCtx, once_differentiable

from tempo.models.blocks.correlation import capturing_graph, compute_dtype

#: Width of the TAM after its first stage, then 32 and 64 before the last 1×1 conv (spec B5).
TAM_WIDTHS = (16, 32, 64)
MOTION_CHANNELS = 6  # [s_u, s_v, s_conf, l_u, l_v, l_conf]


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
