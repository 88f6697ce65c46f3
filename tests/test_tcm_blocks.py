"""TCM building blocks (spec B1–B8), one test per property of spec D2 (items 1–9, 11; block counts of 10).

Sizes are kept small wherever the property does not depend on them; one shape test runs the real
res3 size (8, 512, 28, 28).
"""

from __future__ import annotations

import importlib.util
import itertools
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tempo.models.blocks.correlation import (
    CorrelationVolume,
    correlation_pixel_major,
    correlation_rows,
    correlation_shifted_loop,
)
from tempo.models.blocks.motion_match import match_estimation
from tempo.models.blocks.tcm import (
    MultiScaleTemporalDynamics,
    TemporalCorrelationModule,
    patch_size_for_position,
    tcm_correlation_macs,
)
from tempo.models.blocks.temporal_attention import TemporalAttention, TemporalECA

R = 7  # radius of the default patch (P = 15)


def _load_benchmark():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_correlation.py"
    spec = importlib.util.spec_from_file_location("bench_correlation", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


naive_correlation_unfold = _load_benchmark().naive_correlation_unfold


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)  # module init and unseeded inputs are reproducible per test


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def brute_force_correlation(a: torch.Tensor, b: torch.Tensor, patch_size: int) -> np.ndarray:
    """Scalar loop over (m, i, j, y, x) straight from spec B3 (dot product over channels)."""
    an, bn = a.detach().numpy(), b.detach().numpy()
    m_, _, h, w = an.shape
    r = (patch_size - 1) // 2
    out = np.zeros((m_, patch_size, patch_size, h, w), dtype=np.float64)
    grid = itertools.product(range(m_), range(patch_size), range(patch_size), range(h), range(w))
    for m, i, j, y, x in grid:
        yy, xx = y + i - r, x + j - r
        if 0 <= yy < h and 0 <= xx < w:
            out[m, i, j, y, x] = float(np.dot(an[m, :, y, x], bn[m, :, yy, xx]))
    return out.reshape(m_, patch_size * patch_size, h, w)


def reference_match_estimation(corr: torch.Tensor, patch_size: int, sigma: float = 5.0,
                               inv_temperature: float = 100.0) -> torch.Tensor:
    """Spec B4 written literally with plain autograd ops: (L, P²) → (L, 3) = [u, v, conf]."""
    p, r = patch_size, (patch_size - 1) // 2
    conf, idx = corr.max(1, keepdim=True)
    with torch.no_grad():
        iy, ix = idx // p, idx % p
        k = torch.arange(p * p)
        a, b = k // p, k % p
        sq = ((b[None] - ix) ** 2 + (a[None] - iy) ** 2).to(corr.dtype)
        gauss = torch.exp(-sq / (2 * sigma**2))
    s = torch.softmax(inv_temperature * gauss * corr, dim=1).view(-1, p, p)  # (L, dy, dx)
    d = torch.arange(p, dtype=corr.dtype) - r
    u = (s.sum(1) * d).sum(1) / r
    v = (s.sum(2) * d).sum(1) / r
    return torch.stack([u, v, conf[:, 0]], dim=1)


def video_view(x: torch.Tensor, t: int) -> torch.Tensor:
    return x.view(-1, t, *x.shape[1:])


# --- B3 correlation (D2.2) ------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["rows", "loop"])
@pytest.mark.parametrize("patch_size, h, w", [(3, 5, 7), (7, 6, 9), (15, 5, 8)])
def test_correlation_matches_brute_force_float64(method: str, patch_size: int, h: int, w: int) -> None:
    gen = torch.Generator().manual_seed(patch_size)
    a = torch.randn(2, 3, h, w, dtype=torch.float64, generator=gen)
    b = torch.randn(2, 3, h, w, dtype=torch.float64, generator=gen)
    out = CorrelationVolume(patch_size, method=method)(a, b)
    assert out.shape == (2, patch_size * patch_size, h, w) and out.dtype == torch.float64
    np.testing.assert_allclose(out.numpy(), brute_force_correlation(a, b, patch_size), rtol=0, atol=1e-10)


def test_correlation_channel_layout() -> None:
    """A one-hot B pixel at (y + dy, x + dx) lights up channel (dy + R)·P + (dx + R) at (y, x) only."""
    a = torch.zeros(1, 1, 9, 11, dtype=torch.float64)
    b = torch.zeros_like(a)
    a[0, 0, 4, 5] = 1.0
    b[0, 0, 4 + 2, 5 - 3] = 1.0  # dy = +2 (down), dx = −3 (left)
    out = CorrelationVolume(7)(a, b)
    k = (2 + 3) * 7 + (-3 + 3)
    assert out[0, k, 4, 5] == 1.0 and out.sum() == 1.0


def test_fast_correlation_matches_loop_and_unfold_fp32() -> None:
    gen = torch.Generator().manual_seed(0)
    a = F.normalize(torch.randn(6, 32, 13, 17, generator=gen), dim=1)
    b = F.normalize(torch.randn(6, 32, 13, 17, generator=gen), dim=1)
    rows = correlation_rows(a, b, 15)
    torch.testing.assert_close(rows, correlation_shifted_loop(a, b, 15), rtol=0, atol=1e-5)
    torch.testing.assert_close(rows, naive_correlation_unfold(a, b, 15), rtol=0, atol=1e-5)
    pixel_major = correlation_pixel_major(a, b, 15, relu=True)
    torch.testing.assert_close(pixel_major.permute(1, 3, 0, 2), rows.clamp(min=0), rtol=0, atol=0)


@pytest.mark.parametrize("fn", [
    lambda a, b: correlation_rows(a, b, 5),
    lambda a, b: correlation_pixel_major(a, b, 5, relu=True),
    lambda a, b: correlation_shifted_loop(a, b, 3),
], ids=["rows", "rows_relu", "loop"])
def test_correlation_gradcheck(fn) -> None:
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(2, 3, 4, 6, dtype=torch.float64, generator=gen, requires_grad=True)
    b = torch.randn(2, 3, 4, 6, dtype=torch.float64, generator=gen, requires_grad=True)
    assert torch.autograd.gradcheck(fn, (a, b))


def test_correlation_runs_in_fp32_under_autocast() -> None:
    gen = torch.Generator().manual_seed(2)
    a = torch.randn(2, 8, 6, 7, generator=gen).bfloat16()
    b = torch.randn(2, 8, 6, 7, generator=gen).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = CorrelationVolume(5)(a, b)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, correlation_shifted_loop(a.float(), b.float(), 5), rtol=0, atol=1e-5)


def test_correlation_matches_cuda_sampler() -> None:
    sampler_mod = pytest.importorskip("spatial_correlation_sampler")
    if not torch.cuda.is_available():
        pytest.skip("the CUDA sampler needs a GPU")
    a = torch.randn(4, 16, 12, 14, device="cuda")
    b = torch.randn(4, 16, 12, 14, device="cuda")
    sampler = sampler_mod.SpatialCorrelationSampler(kernel_size=1, patch_size=15, stride=1, padding=0,
                                                    dilation_patch=1)
    expected = sampler(a, b).view(4, 225, 12, 14)
    torch.testing.assert_close(CorrelationVolume(15)(a, b), expected, rtol=0, atol=1e-5)


# --- B4 match estimation --------------------------------------------------------------------------


@pytest.mark.parametrize("patch_size", [3, 7, 15])
def test_match_estimation_matches_literal_spec(patch_size: int) -> None:
    gen = torch.Generator().manual_seed(patch_size)
    corr = torch.rand(40, patch_size**2, dtype=torch.float64, generator=gen)
    corr[:4] = 0.0  # all tie at 0 → uniform softmax
    corr[4:8] = 0.6  # all tie → first index
    corr[8:16] *= 0.01
    corr.requires_grad_()
    grad = torch.randn(40, 3, dtype=torch.float64, generator=gen)
    ours = match_estimation(corr, patch_size, 5.0, 100.0)
    (g_ours,) = torch.autograd.grad(ours, corr, grad)
    ref = reference_match_estimation(corr, patch_size)
    (g_ref,) = torch.autograd.grad(ref, corr, grad)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-10, atol=1e-10)
    small = torch.rand(5, patch_size**2, dtype=torch.float64, generator=gen, requires_grad=True)
    assert torch.autograd.gradcheck(lambda c: match_estimation(c, patch_size, 5.0, 10.0), (small,),
                                    fast_mode=True)


# --- MTDM (D2.1, D2.3–D2.7) -----------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("t", [4, 8, 16])
def test_shapes_small(n: int, t: int) -> None:
    x = torch.randn(n * t, 16, 8, 10)
    mtdm = MultiScaleTemporalDynamics(t, 16, patch_size=7, reduced_channels=8)
    assert mtdm(x).shape == (n * t, 6, 8, 10)
    tcm = TemporalCorrelationModule(t, 16, patch_size=7, reduced_channels=8)
    assert tcm(x).shape == x.shape


def test_shapes_res3_r50() -> None:
    x = torch.randn(8, 512, 28, 28)
    tcm = TemporalCorrelationModule(8, 512)
    with torch.no_grad():
        assert tcm.mtdm(x).shape == (8, 6, 28, 28)
        out = tcm(x)
    assert out.shape == x.shape and torch.isfinite(out).all()


def translating_clip(t: int, c: int, h: int, w: int, dy: int, dx: int, seed: int = 0) -> torch.Tensor:
    """(T, C, H, W) clip of random features whose content moves by (dy, dx) pixels per frame.

    F_t[y, x] = Z[y − t·dy, x − t·dx] for a larger random field Z, i.e. F_{t+1}[y + dy, x + dx] = F_t[y, x].
    """
    gen = torch.Generator().manual_seed(seed)
    margin = t * max(abs(dy), abs(dx))
    field = torch.randn(c, h + 2 * margin, w + 2 * margin, generator=gen)
    frames = [field[:, margin - k * dy:margin - k * dy + h, margin - k * dx:margin - k * dx + w]
              for k in range(t)]
    return torch.stack(frames)


def test_translation_gives_expected_flow() -> None:
    t, h, w = 8, 22, 24
    dy, dx = 1, -2
    x = translating_clip(t, 64, h, w, dy, dx)
    mtdm = MultiScaleTemporalDynamics(t, 64, patch_size=15, use_reduction=False)
    out = mtdm(x)  # (T, 6, H, W)
    interior = out[:, :, R:h - R, R:w - R]
    for k in range(t):
        s_u, s_v, s_conf, l_u, l_v, l_conf = interior[k]
        torch.testing.assert_close(s_u, torch.full_like(s_u, dx / R), rtol=0, atol=1e-4)
        torch.testing.assert_close(s_v, torch.full_like(s_v, dy / R), rtol=0, atol=1e-4)
        torch.testing.assert_close(s_conf, torch.ones_like(s_conf), rtol=0, atol=1e-4)
        gap = min(k, t - 2) + 1  # index T−1 repeats T−2
        if abs(gap * dx) <= R and abs(gap * dy) <= R:  # the long-scale match is still inside the window
            torch.testing.assert_close(l_u, torch.full_like(l_u, gap * dx / R), rtol=0, atol=1e-4)
            torch.testing.assert_close(l_v, torch.full_like(l_v, gap * dy / R), rtol=0, atol=1e-4)
            torch.testing.assert_close(l_conf, torch.ones_like(l_conf), rtol=0, atol=1e-4)
    # the spec's numbers: short (u, v) = (−2/7, 1/7), long index 2 = 3·(−2/7, 1/7)
    assert abs(interior[0, 0].mean().item() + 2 / 7) < 1e-4
    assert abs(interior[2, 3].mean().item() + 6 / 7) < 1e-4


def test_last_index_duplicates_and_index0_scales_agree() -> None:
    t = 8
    x = torch.randn(2 * t, 12, 9, 11)
    out = video_view(MultiScaleTemporalDynamics(t, 12, patch_size=7, reduced_channels=8)(x), t)
    assert torch.equal(out[:, t - 1], out[:, t - 2])
    assert torch.equal(out[:, 0, :3], out[:, 0, 3:])
    assert not torch.equal(out[:, 1, :3], out[:, 1, 3:])


@pytest.mark.parametrize("use_reduction", [False, True])
def test_zero_features_give_zero_motion(use_reduction: bool) -> None:
    mtdm = MultiScaleTemporalDynamics(4, 16, patch_size=7, reduced_channels=8, use_reduction=use_reduction)
    out = mtdm(torch.zeros(8, 16, 9, 10))
    torch.testing.assert_close(out, torch.zeros_like(out), rtol=0, atol=1e-7)
    assert torch.equal(out[:, 2::3], torch.zeros_like(out[:, 2::3]))  # conf exactly 0


def test_constant_features_parity_of_first_index_argmax() -> None:
    h, w = 20, 21
    mtdm = MultiScaleTemporalDynamics(4, 32, patch_size=15, use_reduction=False)
    out = mtdm(torch.full((4, 32, h, w), 0.3))[:, :, R:h - R, R:w - R]
    # every correlation ties at 1 → argmax = index 0 = (dy, dx) = (−R, −R); soft-argmax of 100·g there:
    k = torch.arange(225, dtype=torch.float64)
    prob = torch.softmax(100 * torch.exp(-((k // 15) ** 2 + (k % 15) ** 2) / 50), 0)
    expected = ((k % 15 - R) / R * prob).sum().item()
    assert abs(expected + 0.9825) < 1e-4
    for ch in (0, 1, 3, 4):
        torch.testing.assert_close(out[:, ch], torch.full_like(out[:, ch], expected), rtol=0, atol=1e-5)
    for ch in (2, 5):
        torch.testing.assert_close(out[:, ch], torch.ones_like(out[:, ch]), rtol=0, atol=1e-5)


def test_output_ranges() -> None:
    gen = torch.Generator().manual_seed(3)
    x = 5 * torch.randn(16, 24, 10, 12, generator=gen)
    out = MultiScaleTemporalDynamics(8, 24, patch_size=7, reduced_channels=16)(x)
    flow, conf = out[:, [0, 1, 3, 4]], out[:, [2, 5]]
    rounding = 1e-6  # Σ_k s_k·d_k / R can overshoot ±1 by an ulp when the softmax is one-hot at the rim
    assert flow.min() >= -1 - rounding and flow.max() <= 1 + rounding
    assert conf.min() >= 0 and conf.max() <= 1 + rounding
    assert conf.max() > 0.1 and flow.abs().max() > 0.05  # not degenerate


def test_time_reversal_changes_result() -> None:
    t = 8
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2 * t, 16, 9, 9, generator=gen)
    mtdm = MultiScaleTemporalDynamics(t, 16, patch_size=7, reduced_channels=8).eval()

    def flip(z: torch.Tensor) -> torch.Tensor:
        return video_view(z, t).flip(1).reshape(z.shape)

    assert (mtdm(flip(x)) - flip(mtdm(x))).norm() > 1e-3


def reference_mtdm(x: torch.Tensor, t: int, patch_size: int) -> torch.Tensor:
    """MTDM without reduction written literally from B2/B4 (shifted loop, per-pair match, plain autograd)."""
    nt, c, h, w = x.shape
    feats = video_view(x / torch.sqrt(x.square().sum(1, keepdim=True) + 1e-6), t)

    def motion(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:  # (n, C, H, W) → (n, 3, H, W)
        corr = F.relu(correlation_shifted_loop(first, second, patch_size))  # (n, P², H, W)
        flat = corr.permute(0, 2, 3, 1).reshape(-1, patch_size**2)
        return reference_match_estimation(flat, patch_size).view(-1, h, w, 3).permute(0, 3, 1, 2)

    short = [motion(feats[:, k], feats[:, k + 1]) for k in range(t - 1)]
    long = [motion(feats[:, 0], feats[:, k + 1]) for k in range(t - 1)]
    scales = [torch.stack(pairs + pairs[-1:], dim=1) for pairs in (short, long)]  # (n, T, 3, H, W)
    return torch.cat(scales, dim=2).reshape(nt, 6, h, w)


def test_mtdm_matches_literal_reference_float64() -> None:
    t, p = 4, 7
    x = torch.randn(2 * t, 8, 6, 9, dtype=torch.float64, requires_grad=True)
    mtdm = MultiScaleTemporalDynamics(t, 8, patch_size=p, use_reduction=False)
    grad = torch.randn(2 * t, 6, 6, 9, dtype=torch.float64)
    ours = mtdm(x)
    (g_ours,) = torch.autograd.grad(ours, x, grad)
    ref = reference_mtdm(x, t, p)
    (g_ref,) = torch.autograd.grad(ref, x, grad)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-8, atol=1e-8)


def test_mtdm_runs_in_fp32_under_autocast() -> None:
    x = torch.randn(8, 16, 8, 9)
    mtdm = MultiScaleTemporalDynamics(4, 16, patch_size=7, reduced_channels=8)
    expected = mtdm(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = mtdm(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)


def test_mtdm_gradcheck() -> None:
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(4, 6, 5, 6, dtype=torch.float64, generator=gen, requires_grad=True)
    mtdm = MultiScaleTemporalDynamics(4, 6, patch_size=3, temperature=0.5, use_reduction=False)
    assert torch.autograd.gradcheck(mtdm, (x,), fast_mode=True)


# --- TAM / ECA (D2.9) -----------------------------------------------------------------------------


@pytest.mark.parametrize("t, k", [(4, 3), (8, 3), (16, 5), (32, 5)])
def test_eca_kernel_rule(t: int, k: int) -> None:
    eca = TemporalECA(t)
    assert TemporalECA.kernel_size(t) == k
    assert eca.conv.weight.shape == (1, 1, k) and n_params(eca) == k
    x = torch.rand(2 * t, 5, 3, 4)
    assert eca.attention(x).shape == (2 * 5, t, 1, 1)


def test_eca_scale_matches_attention_and_gradcheck() -> None:
    t = 4
    eca = TemporalECA(t).double()
    x = torch.randn(2 * t, 5, 3, 4, dtype=torch.float64, requires_grad=True)
    weights = eca.attention(x).view(2, 5, t).transpose(1, 2)  # (N, T, C)
    expected = (video_view(x, t) * weights[..., None, None]).reshape(x.shape)
    torch.testing.assert_close(eca(x), expected, rtol=0, atol=1e-14)
    # gradcheck perturbs the conv weight in place, so eca(inp) sees it
    assert torch.autograd.gradcheck(lambda inp, weight: eca(inp), (x, eca.conv.weight), fast_mode=True)
    # the conv weight receives the same gradient as through plain autograd
    grad = torch.randn_like(x)
    (g_ours,) = torch.autograd.grad(eca(x), eca.conv.weight, grad)
    (g_ref,) = torch.autograd.grad(expected, eca.conv.weight, grad)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-12, atol=1e-12)


def test_tam_output_shape_and_non_negative() -> None:
    tam = TemporalAttention(8, out_channels=40)
    out = tam(torch.randn(16, 6, 7, 9))
    assert out.shape == (16, 40, 7, 9) and out.min() >= 0


# --- TCM module (D2.8, D2.10 block counts, D2.11, switches) ---------------------------------------


@pytest.mark.parametrize("in_channels, mtdm, tam, total", [(512, 32_896, 38_267, 71_163),
                                                           (128, 8_320, 12_923, 21_243)])
def test_parameter_counts(in_channels: int, mtdm: int, tam: int, total: int) -> None:
    tcm = TemporalCorrelationModule(8, in_channels, position=2)
    assert n_params(tcm.mtdm) == mtdm and n_params(tcm.tam) == tam and n_params(tcm) == total


def test_patch_size_by_position_and_cost() -> None:
    assert [patch_size_for_position(p) for p in (1, 2, 3, 4)] == [15, 15, 7, 3]
    assert TemporalCorrelationModule(8, 64, position=3).patch_size == 7
    assert TemporalCorrelationModule(8, 64, position=4, patch_size=5).patch_size == 5
    with pytest.raises(ValueError):
        patch_size_for_position(5)
    assert tcm_correlation_macs(8, 15, 64, 28, 28) == 158_054_400  # 0.158 GMACs (spec B8)
    assert TemporalCorrelationModule(8, 512).correlation_macs(28, 28, batch=2) == 2 * 158_054_400
    assert TemporalCorrelationModule(8, 512, use_mtdm=False).correlation_macs(28, 28) == 0


SWITCHES = [(True, True), (True, False), (False, True)]  # (use_mtdm, use_tam) with a branch


@pytest.mark.parametrize("use_mtdm, use_tam", SWITCHES)
def test_identity_init_is_identity_and_official_is_not(use_mtdm: bool, use_tam: bool) -> None:
    x = torch.randn(8, 32, 9, 10)
    tcm = TemporalCorrelationModule(4, 32, patch_size=7, reduced_channels=16, use_mtdm=use_mtdm,
                                    use_tam=use_tam, init="identity")
    assert tcm.branch_gain.shape == (32,) and not tcm.branch_gain.any()
    assert torch.equal(tcm.train()(x), x)
    assert torch.equal(tcm.eval()(x), x)
    official = TemporalCorrelationModule(4, 32, patch_size=7, reduced_channels=16, use_mtdm=use_mtdm,
                                         use_tam=use_tam)
    assert official.branch_gain is None
    assert (official(x) - x).abs().amax() > 1e-3  # the official init is not the identity (B6)
    # the gain is the only extra parameter
    assert n_params(tcm) == n_params(official) + 32


def _train_steps(tcm: TemporalCorrelationModule, steps: int, seed: int = 6) -> dict[str, torch.Tensor]:
    """`steps` SGD steps on a random regression loss; returns each parameter's gradient of the LAST step."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(8, 32, 10, 11, generator=gen)
    target = torch.randn(x.shape, generator=gen)
    opt = torch.optim.SGD(tcm.parameters(), lr=0.1)
    for _ in range(steps):
        opt.zero_grad()
        (tcm(x) * target).sum().backward()
        grads = {name: p.grad.clone() for name, p in tcm.named_parameters()}
        opt.step()
    return grads


@pytest.mark.parametrize("use_mtdm, use_tam", SWITCHES)
def test_official_init_every_parameter_gets_gradient_at_step_one(use_mtdm: bool, use_tam: bool) -> None:
    tcm = TemporalCorrelationModule(4, 32, patch_size=7, reduced_channels=16, use_mtdm=use_mtdm, use_tam=use_tam)
    grads = _train_steps(tcm, steps=1)
    assert len(grads) == len(list(tcm.parameters())) > 0
    dead = [name for name, g in grads.items() if not (torch.isfinite(g).all() and g.abs().sum() > 0)]
    assert not dead, f"parameters without gradient: {dead}"


@pytest.mark.parametrize("use_mtdm, use_tam", SWITCHES)
def test_identity_init_learns(use_mtdm: bool, use_tam: bool) -> None:
    """Step 1: only the zero gain gets a gradient (the branch is multiplied by g = 0); that step moves g off 0,
    so from step 2 on every parameter of the block gets a non-zero gradient (spec D2 item 8)."""
    tcm = TemporalCorrelationModule(4, 32, patch_size=7, reduced_channels=16, use_mtdm=use_mtdm, use_tam=use_tam,
                                    init="identity")
    first = _train_steps(tcm, steps=1)
    assert first["branch_gain"].abs().sum() > 0
    assert all(g.abs().sum() == 0 for name, g in first.items() if name != "branch_gain")
    assert tcm.branch_gain.abs().sum() > 0  # the optimiser step moved the gain
    second = _train_steps(tcm, steps=1)
    dead = [name for name, g in second.items() if not (torch.isfinite(g).all() and g.abs().sum() > 0)]
    assert not dead, f"parameters without gradient after one optimiser step: {dead}"


def test_bad_init_names_the_key() -> None:
    with pytest.raises(ValueError, match=r"model\.network\.init.*'official', 'identity'"):
        TemporalCorrelationModule(4, 32, patch_size=7, init="zero")


def test_zeroed_last_bn_would_be_a_dead_branch() -> None:
    """Why there is no zero-BN option: γ = β = 0 on the TAM's last BN (a ReLU follows) gives no gradient."""
    tcm = TemporalCorrelationModule(4, 32, patch_size=7, reduced_channels=16)
    torch.nn.init.zeros_(tcm.tam.last_bn.weight)
    torch.nn.init.zeros_(tcm.tam.last_bn.bias)
    grads = _train_steps(tcm, steps=2)
    assert all(g.abs().sum() == 0 for g in grads.values())


def test_reduction_conv_gets_gradient() -> None:
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(8, 32, 10, 11, generator=gen)
    tcm = TemporalCorrelationModule(8, 32, patch_size=7, reduced_channels=16)
    (tcm(x) * torch.randn(x.shape, generator=gen)).sum().backward()
    grad = tcm.mtdm.reduce[0].weight.grad
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_ablation_switches() -> None:
    x = torch.randn(8, 24, 9, 10, requires_grad=True)
    no_mtdm = TemporalCorrelationModule(4, 24, patch_size=7, use_mtdm=False)
    assert no_mtdm.mtdm is None
    first = no_mtdm.tam.stage1[0]  # a single 1×1 conv in_channels→16 + BN + ReLU
    assert isinstance(first, torch.nn.Conv2d) and first.in_channels == 24 and first.kernel_size == (1, 1)
    assert first.out_channels == 16 and len(no_mtdm.tam.stage1) == 3
    no_tam = TemporalCorrelationModule(4, 24, patch_size=7, use_tam=False)
    assert no_tam.tam is None and no_tam.projection[0].in_channels == 6
    for module in (no_mtdm, no_tam):
        out = module(x)
        assert out.shape == x.shape and not torch.equal(out, x)
    for init in ("official", "identity"):
        none = TemporalCorrelationModule(4, 24, use_mtdm=False, use_tam=False, init=init)
        assert n_params(none) == 0 and none(x) is x


def test_tcm_under_autocast_keeps_input_dtype() -> None:
    x = torch.randn(8, 16, 8, 8)
    tcm = TemporalCorrelationModule(4, 16, patch_size=7, reduced_channels=8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = tcm(x)
    assert out.dtype == x.dtype and torch.isfinite(out).all()
