"""ST-MANet blocks (spec D.2, D.3, D.5; properties of spec E): TDA, SDA and the diversity losses.

Full-size shapes are checked on the meta device (no compute); values and gradients at tiny sizes.
"""

import math

import pytest
import torch

from tempo.models.blocks.diversity import (
    SpatialAttention,
    cosine_similarity,
    pairwise_similarity,
    pool_spatial_attention,
    pool_temporal_attention,
    spatial_diversity,
    temporal_diversity,
)
from tempo.models.blocks.st_aggregation import SpatialDeepAggregation, TemporalDeepAggregation, tda_chain_stem

# stage → (C, T, H, W) of Z^i at 32×112² (spec D.1)
STAGES = {2: (256, 32, 28, 28), 3: (512, 16, 14, 14), 4: (1024, 8, 7, 7), 5: (2048, 4, 4, 4)}
# Z_TDA^i (spec E.1)
CHAIN = {1: (128, 32, 28, 28), 2: (256, 16, 14, 14), 3: (512, 8, 7, 7), 4: (1024, 4, 4, 4), 5: (2048, 4, 4, 4)}
# A_s at the default sda_kv_pool=2 on stages 2–3 (spec E.2)
SPATIAL = {2: (784, 196), 3: (196, 49), 4: (49, 49), 5: (16, 16)}


def step(module: torch.nn.Module, loss: torch.Tensor, lr: float = 0.1) -> None:
    opt = torch.optim.SGD(module.parameters(), lr=lr)
    opt.zero_grad()
    loss.backward()
    opt.step()


def assert_every_param_has_gradient(module: torch.nn.Module) -> None:
    missing = [n for n, p in module.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient for {missing}"


# -- TDA -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("stage", [2, 3, 4, 5])
def test_tda_shapes_at_paper_size(stage):
    c, t, h, w = STAGES[stage]
    with torch.device("meta"):
        tda = TemporalDeepAggregation(c, c // 2, last=stage == 5)
        delta, chain, attention = tda(torch.empty(2, c, t, h, w), torch.empty(2, *CHAIN[stage - 1]))
    assert delta.shape == (2, c, t, h, w)
    assert chain.shape == (2, *CHAIN[stage])
    assert attention.shape == (2, t, t)
    assert tda.query.out_channels == tda.key.out_channels == c // 16  # [D21]
    assert tda.query.kernel_size == tda.eps_conv.kernel_size == tda.delta_conv.kernel_size == (3, 1, 1)
    assert tda.delta_conv.groups == 8 and tda.eps_conv.in_channels == 3 * c // 2


def test_tda_chain_stem_and_literal_eps_order_shapes():
    with torch.device("meta"):
        stem = tda_chain_stem(64, 128)
        assert stem(torch.empty(2, 64, 32, 28, 28)).shape == (2, *CHAIN[1])
        literal = TemporalDeepAggregation(1024, 512, eps_order="conv_pool")
        _, chain, _ = literal(torch.empty(2, *STAGES[4]), torch.empty(2, *CHAIN[3]))
    assert chain.shape == (2, *CHAIN[4])


def test_tda_attention_rows_sum_to_one_and_match_the_formula():
    torch.manual_seed(0)
    tda = TemporalDeepAggregation(32, 16, reduction=4).eval()
    z, chain = torch.randn(2, 32, 6, 3, 3), torch.randn(2, 16, 6, 3, 3)
    _, _, attention = tda(z, chain)
    torch.testing.assert_close(attention.sum(-1), torch.ones(2, 6), atol=1e-5, rtol=0)
    concat = torch.cat([z, chain], 1)
    q = tda.query(concat).permute(0, 2, 1, 3, 4).flatten(2)  # (B, T, C'HW)
    k = tda.key(concat).permute(0, 2, 1, 3, 4).flatten(2)
    expected = (q @ k.transpose(1, 2) / math.sqrt(q.shape[-1])).softmax(-1)
    torch.testing.assert_close(attention, expected, atol=1e-5, rtol=1e-5)


def test_tda_delta_is_zero_at_init_and_learns_after_one_step():
    torch.manual_seed(0)
    tda = TemporalDeepAggregation(32, 16, reduction=4)
    z, chain = torch.randn(2, 32, 4, 3, 3), torch.randn(2, 16, 4, 3, 3)
    delta, out, _ = tda(z, chain)
    assert torch.equal(delta, torch.zeros_like(delta))  # spec E.6: ΔT = 0 exactly
    target = torch.randn_like(delta)
    step(tda, (delta * target).sum() + out.square().mean())
    # the first step only moves γ (the conv's gradient is γ·… = 0); that is what makes the branch live
    assert tda.delta_bn.weight.abs().sum() > 0
    delta, out, _ = tda(z, chain)
    assert delta.abs().sum() > 0
    tda.zero_grad()
    ((delta * target).sum() + out.square().mean()).backward()
    assert_every_param_has_gradient(tda)


def test_tda_without_zero_init_and_last_stage_has_no_pool():
    tda = TemporalDeepAggregation(32, 16, reduction=4, zero_init_delta=False, last=True)
    assert tda.pool is None and torch.equal(tda.delta_bn.weight, torch.ones(32))
    delta, chain, _ = tda(torch.randn(2, 32, 4, 3, 3), torch.randn(2, 16, 4, 3, 3))
    assert chain.shape == (2, 32, 4, 3, 3) and delta.abs().sum() > 0


def test_tda_without_chain_output_builds_no_eps():
    tda = TemporalDeepAggregation(32, 16, reduction=4, last=True, chain_output=False)
    assert not hasattr(tda, "eps_conv") and not hasattr(tda, "eps_bn")
    delta, chain, attention = tda(torch.randn(2, 32, 4, 3, 3), torch.randn(2, 16, 4, 3, 3))
    assert chain is None and delta.shape == (2, 32, 4, 3, 3) and attention.shape == (2, 4, 4)


def test_tda_rejects_bad_options_and_inputs():
    with pytest.raises(ValueError, match="eps_order"):
        TemporalDeepAggregation(32, 16, eps_order="conv-pool")
    with pytest.raises(ValueError, match="tda_reduction"):
        TemporalDeepAggregation(30, 15, reduction=4)
    with pytest.raises(ValueError, match="does not fit"):
        TemporalDeepAggregation(32, 16, reduction=4)(torch.randn(1, 32, 4, 3, 3), torch.randn(1, 16, 2, 3, 3))


# -- SDA -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("stage", [2, 3, 4, 5])
def test_sda_shapes_at_paper_size(stage):
    c, t, h, w = STAGES[stage]
    with torch.device("meta"):
        sda = SpatialDeepAggregation(c, kv_pool=2 if stage in (2, 3) else 1)
        delta, attention = sda(torch.empty(2, c, t, h, w))
    assert delta.shape == (2, c, t, h, w) and attention.shape == (2, *SPATIAL[stage])
    assert sda.query.out_channels == c // 8  # [D26]


def test_sda_literal_kv_pool_1_attends_over_every_position():
    with torch.device("meta"):
        _, attention = SpatialDeepAggregation(256, kv_pool=1)(torch.empty(1, *STAGES[2]))
    assert attention.shape == (1, 784, 784)


@pytest.mark.parametrize("kv_pool", [1, 2])
def test_sda_rows_sum_to_one_and_delta_is_the_attended_values(kv_pool):
    torch.manual_seed(0)
    sda = SpatialDeepAggregation(16, reduction=4, kv_pool=kv_pool)
    z = torch.randn(2, 16, 3, 4, 6)
    delta, attention = sda(z)
    hk, wk = sda.key_grid(4, 6)
    assert attention.shape == (2, 24, hk * wk) and (hk, wk) == (4 // kv_pool, 6 // kv_pool)
    torch.testing.assert_close(attention.sum(-1), torch.ones(2, 24), atol=1e-5, rtol=0)
    values = torch.nn.functional.avg_pool3d(z, (1, kv_pool, kv_pool)).flatten(3)  # (B, C, T, H'W')
    q = sda.query(z).permute(0, 3, 4, 1, 2).reshape(2, 24, -1)  # position → (C'·T)
    k = sda.key(torch.nn.functional.avg_pool3d(z, (1, kv_pool, kv_pool))).flatten(3).flatten(1, 2)
    expected = (q @ k / math.sqrt(q.shape[-1])).softmax(-1)
    torch.testing.assert_close(attention, expected, atol=1e-5, rtol=1e-5)
    # position (row 1, col 2) of every frame and channel is its attention row applied to the values
    n = 1 * 6 + 2
    torch.testing.assert_close(delta[..., 1, 2], torch.einsum("bctm,bm->bct", values, attention[:, n]))


def test_sda_every_param_gets_a_gradient():
    torch.manual_seed(0)
    sda = SpatialDeepAggregation(16, reduction=4, kv_pool=2)
    z = torch.randn(2, 16, 3, 4, 4)
    target = torch.randn_like(z)
    step(sda, (sda(z)[0] * target).sum())
    sda.zero_grad()
    (sda(z)[0] * target).sum().backward()
    assert_every_param_has_gradient(sda)


def test_sda_rejects_bad_options():
    with pytest.raises(ValueError, match="sda_kv_pool"):
        SpatialDeepAggregation(16, kv_pool=0)
    with pytest.raises(ValueError, match="sda_reduction"):
        SpatialDeepAggregation(20, reduction=8)


# -- diversity -------------------------------------------------------------------------------------------
def test_cosine_similarity_identical_is_one_and_disjoint_is_zero():
    a = torch.rand(3, 4, 4)
    assert cosine_similarity(a, a).item() == pytest.approx(1.0, abs=1e-6)
    assert cosine_similarity(a, 5 * a).item() == pytest.approx(1.0, abs=1e-6)
    left, right = torch.zeros(3, 4, 4), torch.zeros(3, 4, 4)
    left[..., :2], right[..., 2:] = torch.rand(3, 4, 2), torch.rand(3, 4, 2)
    assert cosine_similarity(left, right).item() == 0.0
    # per clip, then the batch mean: one identical pair, one disjoint → 0.5
    assert cosine_similarity(torch.stack([a[0], left[0]]), torch.stack([a[0], right[0]])).item() == pytest.approx(0.5)


def test_shared_matrix_gives_12_in_sum_mode_and_1_in_mean_mode():
    shared = torch.rand(2, 4, 4).softmax(-1)
    stages = [shared] * 4
    assert pairwise_similarity(stages, "sum").item() == pytest.approx(12.0, abs=1e-5)
    assert pairwise_similarity(stages, "mean").item() == pytest.approx(1.0, abs=1e-6)
    # temporal matrices of stages 2–5 that are all uniform pool to one shared 4×4 matrix
    uniform = [torch.full((2, t, t), 1 / t) for t in (32, 16, 8, 4)]
    assert temporal_diversity(uniform, "sum").item() == pytest.approx(12.0, abs=1e-5)
    with pytest.raises(ValueError, match="div_reduction"):
        pairwise_similarity(stages, "max")


def test_disjoint_stages_give_zero_diversity_loss():
    eyes = [torch.zeros(1, 4, 4) for _ in range(4)]
    for i, e in enumerate(eyes):
        e[0, i, :] = 1.0  # stage i only attends from query i: supports are disjoint
    assert pairwise_similarity(eyes, "sum").item() == 0.0


def test_attention_pools_to_the_stage_5_size():
    for t in (32, 16, 8, 4):
        assert pool_temporal_attention(torch.rand(2, t, t), 4).shape == (2, 4, 4)
    grids = {2: ((28, 28), (14, 14)), 3: ((14, 14), (7, 7)), 4: ((7, 7), (7, 7)), 5: ((4, 4), (4, 4))}
    for stage, (q, k) in grids.items():
        a = SpatialAttention(torch.rand(2, *SPATIAL[stage]), q, k)
        assert pool_spatial_attention(a, (4, 4), (4, 4)).shape == (2, 16, 16)


def test_spatial_pooling_keeps_image_rows_apart():
    # queries in the top half attend to keys in the left half: after pooling 4×4 grids to 2×2 the mass sits
    # exactly on (top query cells) × (left key cells); pooling the raster-flattened matrix would smear it
    a = torch.zeros(1, 4, 4, 4, 4)
    a[:, :2, :, :, :2] = 1.0
    pooled = pool_spatial_attention(SpatialAttention(a.reshape(1, 16, 16), (4, 4), (4, 4)), (2, 2), (2, 2))
    expected = torch.zeros(1, 2, 2, 2, 2)
    expected[:, 0, :, :, 0] = 1.0
    torch.testing.assert_close(pooled, expected.reshape(1, 4, 4))


def test_diversity_losses_alone_train_the_attention_projections():
    torch.manual_seed(0)
    tdas = torch.nn.ModuleList([TemporalDeepAggregation(16, 8, reduction=4) for _ in range(2)])
    sdas = torch.nn.ModuleList([SpatialDeepAggregation(16, reduction=4) for _ in range(2)])
    z1, z2 = torch.randn(2, 16, 8, 4, 4), torch.randn(2, 16, 4, 2, 2)
    temporal = [tda(z, torch.randn(2, 8, *z.shape[2:]))[2] for tda, z in zip(tdas, (z1, z2), strict=True)]
    spatial = [SpatialAttention(sda(z)[1], z.shape[-2:], z.shape[-2:]) for sda, z in zip(sdas, (z1, z2), strict=True)]
    (temporal_diversity(temporal) + spatial_diversity(spatial, "mean")).backward()
    for block in (*tdas, *sdas):
        for proj in (block.query, block.key):
            assert proj.weight.grad.abs().sum() > 0
    assert tdas[0].eps_conv.weight.grad is None and tdas[0].delta_conv.weight.grad is None
