"""TDPN network (spec C, D3): shapes, parameter counts of C7, switches, the no-op-at-init branches, gradients,
the aux loss, and every config option by instantiation (composed from conf/model/tdpn.yaml)."""

import pytest
import torch
import torch.nn.functional as F
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from torch import nn

from tempo.models.blocks.bot_mhsa import BoTSelfAttention
from tempo.models.blocks.temporal_difference import GlobalTemporalDifference, LocalTemporalDifference
from tempo.models.tdpn import TDPN, stage_output_sizes
from tests.conftest import compose_config

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_TDPN = ["model=tdpn", "backbone=resnet3d_tiny", "dataset.input_size=32", "dataset.num_classes=5"]


def n_params(m: nn.Module | None) -> int:
    return sum(p.numel() for p in m.parameters()) if m is not None else 0


def build(tmp_path, *overrides: str, tiny: bool = True) -> TDPN:
    base = TINY_TDPN if tiny else ["model=tdpn", "backbone=resnet3d50", "dataset=k400"]
    cfg = compose_config([*base, *overrides], tmp_path)
    return instantiate(cfg.model.network)


def clip(t: int = 8, b: int = 2, size: int = 32) -> torch.Tensor:
    return torch.randn(b, 3, t, size, size)


# ---------------------------------------------------------------- shapes (D3.1)

@pytest.mark.parametrize("frames", [8, 32])
def test_shapes_and_aux_only_in_training(tmp_path, frames):
    torch.manual_seed(0)
    net = build(tmp_path)
    video = clip(frames)
    maps = net.features(video)
    # tiny backbone: widths 8..64 ×4; 32² input → 8, 4, 2, 1 (R50 at 224²: 56, 28, 14, 7)
    assert [tuple(m.shape) for m in maps] == [(2, 32, frames, 8, 8), (2, 64, frames, 4, 4),
                                              (2, 128, frames, 2, 2), (2, 256, frames, 1, 1)]
    assert tuple(net.pyramid(maps).shape) == (2, 256, 1, 1, 1)
    out = net(video)
    assert set(out) == {"logits", "aux_logits"}
    assert out["logits"].shape == out["aux_logits"].shape == (2, 5)
    net.eval()
    with torch.no_grad():
        assert set(net(video)) == {"logits"}


def test_odd_map_sizes_match_the_strided_shortcut(tmp_path):
    """100² frames: res4 is 7×7, so the first MHSA block pools to ⌈7/2⌉ = 4 like its strided shortcut; the
    local branch is sized from the same arithmetic (stage_output_sizes)."""
    torch.manual_seed(6)
    net = build(tmp_path, "dataset.input_size=100")
    maps = net.features(clip(t=2, b=2, size=100))
    sizes = [tuple(m.shape[-2:]) for m in maps]
    assert sizes == [(25, 25), (13, 13), (7, 7), (4, 4)] == stage_output_sizes(net.backbone, 100, 100)
    assert net(clip(t=2, b=2, size=100))["logits"].shape == (2, 5)


# ---------------------------------------------------------------- parameters (C7, D3.7)

@pytest.fixture(scope="module")
def r50(tmp_path_factory):
    return build(tmp_path_factory.mktemp("r50"), tiny=False)


def test_r50_parameter_counts(r50):
    """Spec C7, K=400: total 86,309,460; inference-only (no aux head) 66,611,396; parts as listed."""
    total = n_params(r50)
    assert abs(total - 86_309_460) <= 0.005 * 86_309_460 and total == 86_309_460
    inference = total - sum(n_params(m) for m in r50.training_only_modules())
    assert inference == 66_611_396
    assert n_params(r50.backbone) + n_params(r50.local) == 27_992_884
    assert n_params(r50.pyramid) == 37_798_912
    assert n_params(r50.aux_head) == 19_698_064 and n_params(r50.fc) == 819_600
    assert stage_output_sizes(r50.backbone, 224, 224) == [(56, 56), (28, 28), (14, 14), (7, 7)]  # spec C6
    mhsa = [m for m in r50.backbone.layer4.modules() if isinstance(m, BoTSelfAttention)]
    assert [(m.height, m.width, m.stride) for m in mhsa] == [(14, 14, 2), (7, 7, 1), (7, 7, 1)]
    assert sum(n_params(m) for m in mhsa) == 2_372_864
    blocks = r50.profile_blocks()  # tempo.profile's rows
    assert sum(n_params(b) for k, b in blocks.items() if k.startswith("G@")) == 17_268
    assert [k for k in blocks if k.startswith("MHSA")] == ["MHSA@res5.0", "MHSA@res5.1", "MHSA@res5.2"]
    assert n_params(blocks["local (low_resolution)"]) == 1_046_144


def test_r101_parameter_count(tmp_path):
    """Spec C7: R101 total 114,214,484."""
    assert n_params(build(tmp_path, "backbone=resnet3d101", tiny=False)) == 114_214_484


# switch → exact parameter change at R50/K=400 (spec C7/D3.7): global 17,268; local 1,046,144; MHSA:
# res5's three 1×3×3 convs (3·512·512·9) come back in place of the attention (2,372,864); aux head 19,698,064
SWITCH_DELTAS = {
    "model.network.use_global_low=false": -17_268,
    "model.network.use_local_high=false": -1_046_144,
    "model.network.use_mhsa=false": 3 * 512 * 512 * 9 - 2_372_864,
    "model.aux_weight=0": -19_698_064,
}


@pytest.mark.parametrize("override", sorted(SWITCH_DELTAS))
def test_switches_remove_exactly_their_modules(r50, tmp_path, override):
    net = build(tmp_path, override, tiny=False)
    assert n_params(net) - n_params(r50) == SWITCH_DELTAS[override]
    kinds = {type(m) for m in net.modules()}
    if "global" in override:
        assert GlobalTemporalDifference not in kinds
        assert all(isinstance(b.after_conv1, nn.Identity) for s in net.backbone.stages for b in s)
    if "local" in override:
        assert net.local is None and LocalTemporalDifference not in kinds
    if "mhsa" in override:
        assert BoTSelfAttention not in kinds and all(isinstance(b.conv2, nn.Conv3d) for b in net.backbone.layer4)
    if "aux" in override:
        assert net.aux_head is None and net.training_only_modules() == []


def test_deep_local_variant_adds_a_stem_to_res4_copy(r50, tmp_path):
    """local_variant=deep: stem..res4 at half resolution into res4 only (≈ +8.5M over no local branch)."""
    net = build(tmp_path, "model.network.local_variant=deep", tiny=False)
    assert net.local.fused_stages == ["res4"]
    extra = n_params(net.local)
    assert abs(extra - 8.5e6) < 0.1e6 and n_params(net) - n_params(r50) == extra - 1_046_144


# ---------------------------------------------------------------- no-op branches at init (D3.3, D3.4)

def paired(tmp_path, switch: str):
    """(network with the branch, the same weights without it)."""
    torch.manual_seed(1)
    with_branch = build(tmp_path, "model.network.dropout=0")
    without = build(tmp_path, "model.network.dropout=0", f"model.network.{switch}=false")
    assert not without.load_state_dict(with_branch.state_dict(), strict=False).missing_keys
    return with_branch, without


@pytest.mark.parametrize("switch", ["use_local_high", "use_global_low"])
def test_branch_is_a_no_op_at_init_and_changes_outputs_after_one_step(tmp_path, switch):
    net, reference = paired(tmp_path, switch)
    video = clip()
    for mode in (True, False):
        net.train(mode), reference.train(mode)
        with torch.no_grad():
            a, b = net(video), reference(video)
        assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    labels = torch.tensor([0, 3])
    loss = F.cross_entropy(net(video)["logits"], labels)
    loss.backward()
    opt.step()
    reference.load_state_dict(net.state_dict(), strict=False)  # same weights, branch still absent
    net.eval(), reference.eval()
    with torch.no_grad():
        assert (net(video)["logits"] - reference(video)["logits"]).abs().max() > 1e-6


def test_every_parameter_learns_after_the_first_step(tmp_path):
    """Zero-γ BNs (local laterals, global BN_e) block their branch only in the first step."""
    torch.manual_seed(2)
    net = build(tmp_path)
    video, labels = clip(), torch.tensor([1, 4])
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    for _ in range(2):
        opt.zero_grad()
        out = net(video)
        (F.cross_entropy(out["logits"], labels) + 0.5 * F.cross_entropy(out["aux_logits"], labels)).backward()
        if _ == 0:
            opt.step()
    dead = [name for name, p in net.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not dead


# ---------------------------------------------------------------- loss (C5, D3.8)

@pytest.mark.parametrize("aux_weight", [0.5, 0.0])
def test_loss_is_ce_plus_weighted_aux(tmp_path, aux_weight):
    torch.manual_seed(3)
    cfg = compose_config([*TINY_TDPN, f"model.aux_weight={aux_weight}"], tmp_path)
    net, loss = instantiate(cfg.model.network), instantiate(cfg.model.loss)
    labels = torch.tensor([2, 0])
    out = net(clip())
    terms = loss(out, labels)
    ce = F.cross_entropy(out["logits"], labels)
    if aux_weight:
        aux = F.cross_entropy(out["aux_logits"], labels)
        assert torch.allclose(terms["loss"], ce + 0.5 * aux) and torch.allclose(terms["aux"], aux)
    else:
        assert "aux_logits" not in out and set(terms) == {"loss", "ce"}
        assert torch.equal(terms["loss"], ce)
    net.eval()
    with torch.no_grad():
        out = net(clip())
    assert torch.allclose(loss(out, labels)["loss"], F.cross_entropy(out["logits"], labels))


# ---------------------------------------------------------------- options and errors

@pytest.mark.parametrize("overrides", [
    ["model.network.local_variant=deep"],
    ["model.network.pyramid.flow=parallel"],
    ["model.network.pyramid.ssm_groups=1"],
    ["model.network.pyramid.trm_rates=[2,2,4,4]"],
    ["model.network.use_global_low=false", "model.network.use_local_high=false", "model.network.use_mhsa=false"],
    ["model.network.global_reduction=4", "model.network.global_zero_init=false"],
    ["model.network.local_num_differences=2", "model.network.mhsa_heads=2"],
    ["model.aux_weight=0", "model.network.dropout=0.2"],
])
def test_options_instantiate_and_run(tmp_path, overrides):
    torch.manual_seed(4)
    cfg = compose_config([*TINY_TDPN, *overrides], tmp_path)
    net, loss = instantiate(cfg.model.network), instantiate(cfg.model.loss)
    out = net(clip())
    loss(out, torch.tensor([0, 1]))["loss"].backward()
    assert out["logits"].shape == (2, 5)


def test_clear_errors(tmp_path):
    config_error = (ValueError, InstantiationException)  # Hydra wraps the network's ValueError
    with pytest.raises(config_error, match="backbone=resnet3d50"):
        instantiate(compose_config(["model=tdpn", "backbone=resnet_tiny"], tmp_path).model.network)
    with pytest.raises(config_error, match="local_variant"):
        build(tmp_path, "model.network.local_variant=medium")
    with pytest.raises(config_error, match="aux_weight"):
        build(tmp_path, "model.aux_weight=-1")
    net = build(tmp_path)
    with pytest.raises(ValueError, match="input_size"):
        net(clip(size=64))


@pytest.mark.parametrize("use_global_low", [False, True])
@pytest.mark.parametrize("use_local_high", [False, True])
def test_table_iv_ablation_rows_run_a_step(tmp_path, use_global_low, use_local_high):
    """Spec D3.9: the four rows of experiment=tdpn_ablation_modules, one forward/backward step each
    (MHSA and pyramid always on)."""
    torch.manual_seed(5)
    cfg = compose_config([*TINY_TDPN, f"model.network.use_global_low={use_global_low}",
                          f"model.network.use_local_high={use_local_high}"], tmp_path)
    net, loss = instantiate(cfg.model.network), instantiate(cfg.model.loss)
    kinds = {type(m) for m in net.modules()}
    assert (GlobalTemporalDifference in kinds, LocalTemporalDifference in kinds) == (use_global_low, use_local_high)
    assert BoTSelfAttention in kinds
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    loss(net(clip()), torch.tensor([0, 1]))["loss"].backward()
    opt.step()
    assert all(torch.isfinite(p).all() for p in net.parameters())
