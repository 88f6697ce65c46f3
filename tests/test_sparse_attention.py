"""Sparse spatial attention block (spec B; tempo/models/blocks/sparse_attention.py): the properties of spec E
3–10 — CRM consistency, entropy gate, peak finder, zoom identity and magnification, Gaussian shape, split
rules, and gradients that reach β1/β2 but never the features or the classifier."""

import math

import pytest
import torch
import torch.nn.functional as F

from tempo.models.blocks.sparse_attention import (
    PeakSplit,
    ResponsePeaks,
    SaliencyResampler,
    SparseSaliency,
    SparseSpatialAttention,
    class_response_maps,
    find_peaks,
    gaussian_peaks,
    min_max_normalize,
    top5_entropy,
)

# tiny CPU models: one intra-op thread is far faster on the shared, busy machine
pytestmark = pytest.mark.usefixtures("one_thread")

G = 31


def bump(row: float, col: float, sigma: float, size: int = G) -> torch.Tensor:
    axis = torch.arange(size, dtype=torch.float64)
    return torch.exp(-((axis.view(-1, 1) - row) ** 2 + (axis.view(1, -1) - col) ** 2) / (2 * sigma**2))


def test_crm_mean_equals_the_classifier_on_per_frame_pooled_features():
    torch.manual_seed(0)
    x, fc = torch.randn(2, 12, 5, 7, 7), torch.nn.Linear(12, 9)
    maps = class_response_maps(x, fc.weight, fc.bias)
    assert maps.shape == (2, 5, 9, 7, 7)
    per_frame = fc(x.mean(dim=(3, 4)).transpose(1, 2))  # (B, T, S)
    torch.testing.assert_close(maps.mean(dim=(-2, -1)), per_frame, atol=1e-5, rtol=0)


def test_top5_entropy_values():
    uniform = torch.full((1, 5), 0.2)
    entropy, _ = top5_entropy(uniform)
    assert entropy.item() == pytest.approx(math.log(5), abs=1e-6)
    assert top5_entropy(uniform, normalized=True)[0].item() == pytest.approx(1.0, abs=1e-6)
    confident = torch.tensor([[0.96, 0.01, 0.01, 0.01, 0.01]])
    assert top5_entropy(confident)[0].item() == pytest.approx(0.223, abs=1e-3)


def gate_inputs(logits: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Features whose per-frame CRMs (identity classifier) are a constant logit + a zero-mean pattern per class."""
    torch.manual_seed(1)
    patterns = torch.randn(5, 4, 4)
    patterns -= patterns.mean(dim=(1, 2), keepdim=True)
    features = (patterns + torch.tensor(logits).view(5, 1, 1)).view(1, 5, 1, 4, 4)
    return features, patterns


def test_entropy_gate_uses_all_five_maps_when_unsure():
    features, patterns = gate_inputs([0.0] * 5)  # p_top5 = 0.2 each: H = ln 5 > δ
    response = ResponsePeaks().response(features, torch.eye(5), None)
    torch.testing.assert_close(response[0], patterns.sum(0), atol=1e-5, rtol=0)


def test_entropy_gate_uses_the_top_map_when_confident():
    p = [0.99, 0.0025, 0.0025, 0.0025, 0.0025]
    features, patterns = gate_inputs([math.log(v) for v in p])
    response = ResponsePeaks().response(features, torch.eye(5), None)
    torch.testing.assert_close(response[0], patterns[0] + math.log(0.99), atol=1e-5, rtol=0)
    # the normalised gate with δ̂ = 0.2/ln5 decides the same here
    response = ResponsePeaks(entropy="normalized", delta=0.2 / math.log(5)).response(features, torch.eye(5), None)
    torch.testing.assert_close(response[0], patterns[0] + math.log(0.99), atol=1e-5, rtol=0)


def test_peak_finder_returns_the_two_bumps_and_ignores_the_ripple():
    axis = torch.arange(G, dtype=torch.float64)
    ripple = 0.02 * torch.sin(axis.view(-1, 1) * 1.3) * torch.cos(axis.view(1, -1) * 1.7)
    raw = bump(5, 7, 3) + 0.6 * bump(20, 22, 3) + ripple
    normalized, valid = min_max_normalize(raw[None].float())
    coords, scores, mask = find_peaks(normalized, valid=valid)
    assert mask.sum().item() == 2
    assert coords[0, :2].tolist() == [[5, 7], [20, 22]]
    assert scores[0, 0].item() == pytest.approx(1.0, abs=1e-6)
    assert scores[0, 1].item() == pytest.approx(0.6, abs=0.03)


def test_peak_finder_finds_nothing_on_a_constant_map():
    normalized, valid = min_max_normalize(torch.full((2, G, G), 3.7))
    assert not valid.any()
    assert not find_peaks(normalized, valid=valid)[2].any()
    # the whole B.1 path: constant features give constant CRMs
    peaks = ResponsePeaks()(torch.ones(1, 4, 2, 5, 5), torch.randn(3, 4), torch.randn(3))
    assert not peaks["mask"].any()


def test_peaks_are_capped_and_sorted():
    torch.manual_seed(0)
    coords, scores, mask = find_peaks(torch.rand(3, G, G), max_peaks=16)
    assert mask.all() and scores.shape == (3, 16)  # random maps have many local maxima
    assert (scores[:, :-1] >= scores[:, 1:]).all()


def identity_grid(size: int) -> torch.Tensor:
    line = torch.linspace(-1, 1, size)
    return torch.stack([line.view(1, -1).expand(size, size), line.view(-1, 1).expand(size, size)], dim=-1)


def test_zoom_with_uniform_saliency_is_the_identity():
    zoom = SaliencyResampler()
    grid = zoom.grid(torch.full((2, 1, G, G), 0.09), (224, 224))
    assert (grid - identity_grid(224)).abs().max().item() < 1e-5
    frames = torch.rand(2, 3, 224, 224, dtype=torch.float64)
    uniform = torch.full((2, 1, G, G), 0.09, dtype=torch.float64)
    assert (zoom(frames, uniform) - frames).abs().max().item() < 1e-5
    # float32: grid_sample's own rounding of its source coordinates (~1e-5 px) on noise frames, grid exact
    frames = frames.float()
    assert (zoom(frames, torch.full((2, 1, G, G), 0.09)) - frames).abs().max().item() < 1e-4


def test_zoom_grid_stays_float32_under_autocast():
    saliency = SparseSaliency()(torch.tensor([[[15, 15]]]), torch.ones(1, 1), torch.ones(1, 1, dtype=torch.bool),
                                torch.zeros(1, 1, dtype=torch.bool), G)[0].detach()
    zoom = SaliencyResampler()
    reference = zoom.grid(saliency, (64, 64))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        grid = zoom.grid(saliency.bfloat16(), (64, 64))
        frames = zoom(torch.rand(1, 3, 64, 64).bfloat16(), saliency.bfloat16())
    assert grid.dtype == torch.float32 and frames.dtype == torch.bfloat16
    # the bf16 saliency input is rounded (~0.4 %), the grid arithmetic is not
    assert (grid - reference).abs().max().item() < 2e-3
    assert (zoom.grid(torch.full((1, 1, G, G), 0.09).bfloat16(), (64, 64)) - identity_grid(64)).abs().max() < 1e-5


def test_zoom_buffers_are_fixed():
    zoom = SaliencyResampler()
    assert not list(zoom.parameters())
    assert {n for n, _ in zoom.named_buffers()} == {"centres", "kernel"}
    kernel = zoom.kernel[0, 0]
    assert kernel.shape == (61, 61) and kernel.max().item() == kernel[30, 30].item() == 1.0  # unnormalised
    # full width at half maximum 13 px: k = exp(−4 ln2 · r² / 13²), i.e. 1/2 at r = 6.5
    assert kernel[30, 36].item() == pytest.approx(0.5 ** (36 / 6.5**2), rel=1e-5)
    # the coordinate kernels are k × (P(window position) − P(centre)), P = (index − 30) / 30
    torch.testing.assert_close(zoom.kernel[1, 0, 7], kernel[7] * (torch.arange(61) - 30) / 30)
    torch.testing.assert_close(zoom.kernel[2, 0, :, 7], kernel[:, 7] * (torch.arange(61) - 30) / 30)


def test_zoom_grid_matches_the_literal_formula_in_float64():
    """g = 2·conv(Qp·P, k)/conv(Qp, k) − 1 with P = (index − 30)/30 over the padded map (spec B.2 step 8)."""
    torch.manual_seed(0)
    saliency = (0.09 + torch.rand(2, 1, G, G)).double()
    padded = F.pad(saliency, (30,) * 4, mode="replicate")
    p = (torch.arange(91, dtype=torch.float64) - 30) / 30
    k = SaliencyResampler().kernel[:1]
    den = F.conv2d(padded, k)
    gx = (2 * F.conv2d(padded * p.view(1, -1), k) / den - 1).clamp(-1, 1)
    gy = (2 * F.conv2d(padded * p.view(-1, 1), k) / den - 1).clamp(-1, 1)
    grid = SaliencyResampler().grid(saliency, (G, G))
    torch.testing.assert_close(grid[..., 0], gx[:, 0], atol=1e-12, rtol=0)
    torch.testing.assert_close(grid[..., 1], gy[:, 0], atol=1e-12, rtol=0)


def test_a_central_bump_magnifies_the_centre():
    saliency = SparseSaliency()
    coords, scores, mask = torch.tensor([[[15, 15]]]), torch.ones(1, 1), torch.ones(1, 1, dtype=torch.bool)
    q_dis, _ = saliency(coords, scores, mask, torch.zeros_like(mask), G)
    gx = SaliencyResampler().grid(q_dis.detach(), (224, 224))[0, 112, :, 0]
    centre, border = (gx[112] - gx[111]).item(), (gx[1] - gx[0]).item()
    assert centre < 2 / 223 < border
    gy = SaliencyResampler().grid(q_dis.detach(), (224, 224))[0, :, 112, 1]
    assert (gy[112] - gy[111]).item() < 2 / 223 < (gy[1] - gy[0]).item()


def test_gaussian_peaks_at_its_centre_with_its_weight_and_sigma_grows_as_sqrt_s():
    coords = torch.tensor([[[10, 20]]])
    mask = torch.ones(1, 1, dtype=torch.bool)
    beta = torch.tensor(0.08)
    for s in (1.0, 0.25):
        scores = torch.tensor([[s]])
        a = gaussian_peaks(coords, scores, mask, beta, G)[0]
        assert tuple(divmod(a.argmax().item(), G)) == (10, 20)
        assert a[10, 20].item() == pytest.approx(s)
        # value one pixel away: s·exp(−1/(2σ²)) with σ = β·√s·G
        sigma = 0.08 * math.sqrt(s) * G
        assert a[10, 21].item() == pytest.approx(s * math.exp(-1 / (2 * sigma**2)), rel=1e-5)
        comp = gaussian_peaks(coords, scores, mask, beta, G, complementary=True)[0]
        assert comp[10, 20].item() == pytest.approx(1 / s)


def test_masked_peaks_add_nothing_and_empty_sets_are_uniform():
    saliency = SparseSaliency()
    coords, scores = torch.tensor([[[3, 3], [0, 0]]]), torch.tensor([[1.0, 0.0]])
    mask = torch.tensor([[True, False]])
    q_dis, q_com = saliency(coords, scores, mask, torch.zeros_like(mask), G)
    assert torch.isfinite(q_dis).all() and torch.isfinite(q_com).all()
    assert torch.equal(q_com, torch.full_like(q_com, 0.09))
    assert q_dis[0, 0, 3, 3].item() == pytest.approx(1.09)


def test_split_rules():
    scores = torch.tensor([[1.0, 0.7, 0.4, 0.2, 0.0]])
    mask = torch.tensor([[True, True, True, True, False]])
    split = PeakSplit()
    split.train()
    for _ in range(50):  # the global maximum (s = 1) is always discriminative; sets are disjoint
        dis, com = split(scores, mask)
        assert dis[0, 0] and not (dis & com).any() and ((dis | com) == mask).all()
    split.eval()  # fixed φ = 0.5: deterministic
    first, second = split(scores, mask), split(scores, mask)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert first[0].tolist() == [[True, True, False, False, False]]
    assert first[1].tolist() == [[False, False, True, True, False]]
    extreme = PeakSplit(eval_split="extreme").eval()
    dis, com = extreme(scores, mask)
    assert dis.tolist() == [[True, False, False, False, False]] and com.tolist() == [[False, False, False, True, False]]
    single = torch.tensor([[True, False, False, False, False]])
    assert not extreme(scores, single)[1].any()
    warm = PeakSplit(warmup_all_peaks_iters=2).train()
    for _ in range(2):
        dis, com = warm(scores, mask)
        assert torch.equal(dis, mask) and torch.equal(com, mask)
    dis, com = warm(scores, mask)
    assert not (dis & com).any()
    with pytest.raises(ValueError, match="eval_split"):
        PeakSplit(eval_split="best")


def test_random_split_follows_the_scores():
    torch.manual_seed(0)
    scores, mask = torch.tensor([[1.0, 0.7, 0.2]]).repeat(4000, 1), torch.ones(4000, 3, dtype=torch.bool)
    dis, _ = PeakSplit().train()(scores, mask)
    assert dis.float().mean(0).tolist() == pytest.approx([1.0, 0.7, 0.2], abs=0.03)
    dis, _ = PeakSplit(eval_split="random").eval()(scores, mask)
    assert dis.float().mean(0).tolist() == pytest.approx([1.0, 0.7, 0.2], abs=0.03)


def single_peak_inputs(t: int = 2, size: int = 32):
    """Features whose CRMs have one bump per frame (identity classifier, one class): C is empty at φ = 0.5."""
    base = bump(3, 4, 1.0, size=7).float()
    features = base.view(1, 1, 1, 7, 7).expand(1, 1, t, 7, 7).clone()
    return torch.rand(1, 3, t, size, size), features, torch.ones(1, 1), torch.zeros(1)


def test_empty_complementary_set_leaves_the_clip_unchanged():
    video, features, weight, bias = single_peak_inputs()
    attention = SparseSpatialAttention().eval()
    out = attention(video.double(), features, weight, bias)  # float64: see the zoom identity test
    assert out["discriminative_mask"].sum(-1).tolist() == [[1, 1]] and not out["complementary_mask"].any()
    assert out["discriminative"].shape == video.shape == out["complementary"].shape
    assert (out["complementary"] - video).abs().max().item() < 1e-5
    assert (out["discriminative"] - video).abs().max().item() > 0.05  # the bump is magnified


def test_gradients_reach_beta_and_never_the_features_or_the_classifier():
    torch.manual_seed(0)
    attention = SparseSpatialAttention().eval()  # fixed split: some peaks in each set
    video = torch.rand(2, 3, 3, 32, 32)
    features = torch.randn(2, 6, 3, 7, 7, requires_grad=True)
    weight, bias = torch.randn(4, 6, requires_grad=True), torch.randn(4, requires_grad=True)
    out = attention(video, features, weight, bias)
    assert out["discriminative_mask"].any() and out["complementary_mask"].any()
    r = torch.randn_like(video)
    (out["discriminative"] * r).sum().backward(retain_graph=True)
    beta1, beta2 = attention.saliency.beta1, attention.saliency.beta2
    assert torch.isfinite(beta1.grad) and beta1.grad.abs().item() > 0
    assert beta2.grad is None or beta2.grad.item() == 0
    (out["complementary"] * r).sum().backward()
    assert torch.isfinite(beta2.grad) and beta2.grad.abs().item() > 0
    assert features.grad is None and weight.grad is None and bias.grad is None


def test_one_optimiser_step_updates_both_betas():
    torch.manual_seed(0)
    attention = SparseSpatialAttention().train()
    video, features, weight = torch.rand(2, 3, 4, 32, 32), torch.randn(2, 6, 4, 7, 7), torch.randn(4, 6)
    opt = torch.optim.SGD(attention.parameters(), lr=0.01)
    before = [p.detach().clone() for p in attention.parameters()]
    out = attention(video, features, weight)
    target = torch.rand_like(video)
    (F.mse_loss(out["discriminative"], target) + F.mse_loss(out["complementary"], target)).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in attention.parameters())
    opt.step()
    assert all(not torch.equal(b, p) for b, p in zip(before, attention.parameters(), strict=True))


def test_clip_features_must_keep_one_map_per_frame():
    with pytest.raises(ValueError, match="one feature map per input frame"):
        SparseSpatialAttention()(torch.rand(1, 3, 8, 32, 32), torch.randn(1, 4, 4, 2, 2), torch.randn(3, 4))


def test_bad_options_fail_clearly():
    with pytest.raises(ValueError, match="entropy"):
        ResponsePeaks(entropy="log")
    with pytest.raises(ValueError, match="base"):
        SparseSaliency(base=0.0)
    with pytest.raises(TypeError, match="padding_mode"):  # no option: it cannot change the output (see the class)
        SaliencyResampler(padding_mode="zeros")
    with pytest.raises(ValueError, match="grid_size"):
        SparseSpatialAttention(peaks=ResponsePeaks(grid_size=21), zoom=SaliencyResampler(grid_size=31))
