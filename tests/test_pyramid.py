"""Temporal pyramid (spec C4) and TPN's auxiliary head (C5): shapes, flows, parameter counts, gradients."""

import pytest
import torch
from torch import nn

from tempo.models.blocks.temporal_pyramid import (
    AuxiliaryHead,
    BottomUpFlow,
    TemporalPyramid,
    TopDownFlow,
)

R50 = [256, 512, 1024, 2048]
TINY = [32, 64, 128, 256]


def count(m):
    return sum(p.numel() for p in m.parameters())


def features(channels, t, top=1, batch=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, c, t, top * 2 ** (3 - i), top * 2 ** (3 - i), generator=g)
            for i, c in enumerate(channels)]


@pytest.mark.parametrize("t", [8, 32])
def test_r50_level_shapes(t):
    """Spec C6 (at res5 = 1×1 instead of 7×7): SSM → 4×(2048, T), TRM → 4×(1024, 1), fusion (2048, 1)."""
    pyramid = TemporalPyramid(R50).eval()
    feats = features(R50, t)
    with torch.no_grad():
        ssm = pyramid.spatial_modulation(feats)
        trm = pyramid.temporal_modulation(ssm)
        out = pyramid(feats)
    assert [tuple(s.shape) for s in ssm] == [(1, 2048, t, 1, 1)] * 4
    assert [tuple(s.shape) for s in trm] == [(1, 1024, 1, 1, 1)] * 4
    assert out.shape == (1, 2048, 1, 1, 1)


def test_spatial_sizes_reach_res5_map():
    pyramid = TemporalPyramid(TINY).eval()
    feats = features(TINY, 4, top=7)  # res2 56² … res5 7²: the 224-input geometry
    with torch.no_grad():
        assert [tuple(s.shape[2:]) for s in pyramid.spatial_modulation(feats)] == [(4, 7, 7)] * 4
        assert pyramid(feats).shape == (1, 256, 1, 7, 7)


def test_temporal_rates_set_each_level_length():
    pyramid = TemporalPyramid(TINY, trm_rates=[1, 2, 4, 8]).eval()
    feats = features(TINY, 8)
    with torch.no_grad():
        trm = pyramid.temporal_modulation(pyramid.spatial_modulation(feats))
        assert [s.shape[2] for s in trm] == [8, 4, 2, 1]
        assert [s.shape[2] for s in pyramid.top_down(trm)] == [8, 4, 2, 1]
        assert [s.shape[2] for s in pyramid.bottom_up(trm)] == [8, 4, 2, 1]
        assert pyramid(feats).shape == (1, 256, 1, 1, 1)


def test_top_down_flow_adds_upsampled_upper_levels():
    levels = [torch.randn(1, 4, 4, 2, 2), torch.randn(1, 4, 2, 2, 2), torch.randn(1, 4, 1, 2, 2)]
    out = TopDownFlow()(levels)
    assert torch.equal(out[2], levels[2])
    expected1 = levels[1] + levels[2].expand(-1, -1, 2, -1, -1)
    torch.testing.assert_close(out[1], expected1)
    torch.testing.assert_close(out[0], levels[0] + expected1.repeat_interleave(2, dim=2))


def test_bottom_up_flow_cascades_its_own_updates():
    flow = BottomUpFlow(3, 4)
    levels = [torch.randn(1, 4, 2, 2, 2) for _ in range(3)]
    out = flow(levels)
    assert torch.equal(out[0], levels[0])
    expected1 = levels[1] + flow.downs[0](levels[0])
    torch.testing.assert_close(out[1], expected1)
    torch.testing.assert_close(out[2], levels[2] + flow.downs[1](expected1))


@pytest.mark.parametrize("flow", ["cascade", "parallel"])
def test_bottom_up_input_is_top_down_output_in_cascade_and_modulation_output_in_parallel(flow):
    """Spec D3.6."""
    pyramid = TemporalPyramid(TINY, trm_rates=[1, 1, 1, 1], flow=flow).eval()
    seen = {}
    pyramid.temporal_modulation.register_forward_hook(lambda m, i, o: seen.update(modulated=o))
    pyramid.top_down.register_forward_hook(lambda m, i, o: seen.update(top_down=o))
    pyramid.bottom_up.register_forward_hook(lambda m, i, o: seen.update(bottom_up_in=i[0]))
    with torch.no_grad():
        pyramid(features(TINY, 4))
    expected = seen["top_down" if flow == "cascade" else "modulated"]
    other = seen["modulated" if flow == "cascade" else "top_down"]
    assert all(torch.equal(a, b) for a, b in zip(seen["bottom_up_in"], expected, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(seen["bottom_up_in"], other, strict=True))


def test_flows_give_different_outputs():
    torch.manual_seed(0)
    cascade = TemporalPyramid(TINY, trm_rates=[1, 1, 1, 1]).eval()
    parallel = TemporalPyramid(TINY, trm_rates=[1, 1, 1, 1], flow="parallel").eval()
    parallel.load_state_dict(cascade.state_dict())
    feats = features(TINY, 4)
    with torch.no_grad():
        assert not torch.allclose(cascade(feats), parallel(feats))


def test_r50_parameter_counts():
    """Spec C7: neck 37,798,912 = SSM 2,118,656 + TRM 786,432 + bottom-up 9,437,184 + 2×8,531,968 + 8,392,704;
    aux head 19,698,064 at K=400; TPN's dense SSM (`ssm_groups=1`) would cost 67.3M."""
    pyramid = TemporalPyramid(R50)
    assert count(pyramid) == 37_798_912
    assert count(pyramid.spatial_modulation) == 2_118_656
    assert count(pyramid.temporal_modulation) == 786_432
    assert count(pyramid.bottom_up) == 9_437_184
    assert count(pyramid.top_down_fusion) == count(pyramid.bottom_up_fusion) == 8_531_968
    assert count(pyramid.pyramid_fusion) == 8_392_704
    assert count(AuxiliaryHead(1024, 400)) == 19_698_064
    dense = 9 * (256 * 512 + 2 * 512 * 1024 + 3 * 1024 * 2048) + 2 * (512 + 2 * 1024 + 3 * 2048)
    assert count(TemporalPyramid(R50, ssm_groups=1).spatial_modulation) == dense == 67_257_344


def test_init_is_xavier_and_nothing_starts_at_zero():
    pyramid = TemporalPyramid(TINY)
    for m in pyramid.modules():
        if isinstance(m, nn.BatchNorm3d):
            assert torch.equal(m.weight, torch.ones_like(m.weight)) and m.bias.abs().sum() == 0
        if isinstance(m, nn.Conv3d):
            assert m.bias is None
            fan_in = m.weight[0].numel()
            fan_out = m.weight.shape[0] * m.weight[0, 0].numel()
            bound = (6 / (fan_in + fan_out)) ** 0.5
            assert m.weight.abs().max() <= bound and m.weight.abs().max() > 0.5 * bound


@pytest.mark.parametrize("kw", [{}, {"flow": "parallel"}, {"trm_rates": [1, 2, 4, 8]}, {"ssm_groups": 1}])
def test_every_parameter_learns(kw):
    torch.manual_seed(0)
    pyramid = TemporalPyramid(TINY, **kw)
    head = AuxiliaryHead(128, 5)
    opt = torch.optim.SGD([*pyramid.parameters(), *head.parameters()], lr=0.1)
    feats = features(TINY, 8, batch=2)
    for _ in range(2):
        opt.zero_grad()
        loss = pyramid(feats).square().mean() + nn.functional.cross_entropy(head(feats[2]), torch.tensor([1, 3]))
        loss.backward()
        opt.step()
    for name, p in [*pyramid.named_parameters(), *(("aux." + n, p) for n, p in head.named_parameters())]:
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_auxiliary_head_shape():
    head = AuxiliaryHead(128, 7).eval()
    assert head(torch.randn(3, 128, 8, 4, 4)).shape == (3, 7)
    assert head.conv[0].stride == (1, 2, 2) and head.conv[0].out_channels == 256


@pytest.mark.parametrize("kw, match", [
    ({"flow": "sideways"}, "pyramid flow"),
    ({"ssm_groups": 3}, "ssm_groups=3"),
    ({"trm_groups": 5}, "trm_groups=5"),
    ({"level_groups": 7}, "level_groups=7"),
    ({"trm_rates": [1, 2]}, "trm_rates"),
])
def test_bad_options_fail_clearly(kw, match):
    with pytest.raises(ValueError, match=match):
        TemporalPyramid(TINY, **kw)


def test_mismatched_level_sizes_fail_clearly():
    pyramid = TemporalPyramid(TINY)
    feats = features(TINY, 2)
    feats[0] = torch.randn(1, 32, 2, 9, 9)
    with pytest.raises(ValueError, match="different sizes"):
        pyramid(feats)
    with pytest.raises(ValueError, match="power of two"):
        TemporalPyramid([32, 48, 128, 256])
