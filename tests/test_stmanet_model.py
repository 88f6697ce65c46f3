"""ST-MANet network (spec D, properties of spec E): shapes and parameter/MAC counts at the paper's size on the
meta device; equivalence with the plain 3D-R50; zero-γ ΔT; diversity gradients; every switch and option
built from the real configs at tiny size."""

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from tempo.analysis.counting import profile_network
from tempo.models.backbones.resnet3d import ResNet3d
from tempo.models.blocks.st_aggregation import SpatialDeepAggregation, TemporalDeepAggregation
from tempo.models.stmanet import FusionOptions, SDAOptions, STMANet, TDAOptions, init_aggregation
from tests.conftest import CONF_DIR, TINY, compose_config

PAPER = ["model=stmanet", "backbone=resnet3d50_stmanet", "dataset.num_classes=101"]
OFF = ["model.network.tda.enabled=false", "model.network.sda.enabled=false", "model.network.fusion.mf=false"]
TINY_3D = [o for o in TINY if not o.startswith("backbone=")] + ["model=stmanet", "backbone=resnet3d_stmanet_tiny"]
# 16 frames at 48²: every stage keeps T ≥ 2 and H ≥ 2, so all attention matrices are non-trivial
TINY_CLIP = (2, 3, 16, 48, 48)


def network(tmp_path: Path, *overrides: str, base=TINY_3D) -> STMANet:
    return instantiate(compose_config([*base, *overrides], tmp_path).model.network)


def meta_network(tmp_path: Path, *overrides: str) -> STMANet:
    with torch.device("meta"):
        return network(tmp_path, *overrides, base=PAPER)


def num_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture
def clip():
    torch.manual_seed(0)
    return torch.randn(*TINY_CLIP)


# -- paper size (meta device: shapes and counts, no compute) ---------------------------------------------
def test_stage_chain_and_attention_shapes_at_32x112(tmp_path):
    net = meta_network(tmp_path)
    with torch.device("meta"):
        f = net.forward_features(torch.empty(2, 3, 32, 112, 112))
    assert [tuple(z.shape[1:]) for z in f.stage_outputs] == [
        (256, 32, 28, 28), (512, 16, 14, 14), (1024, 8, 7, 7), (2048, 4, 4, 4)]
    assert [tuple(z.shape[1:]) for z in f.levels] == [tuple(z.shape[1:]) for z in f.stage_outputs]
    assert [tuple(z.shape[1:]) for z in f.chain] == [
        (128, 32, 28, 28), (256, 16, 14, 14), (512, 8, 7, 7), (1024, 4, 4, 4), (2048, 4, 4, 4)]
    assert [tuple(a.shape) for a in f.temporal] == [(2, 32, 32), (2, 16, 16), (2, 8, 8), (2, 4, 4)]
    assert [tuple(a.matrix.shape) for a in f.spatial] == [(2, 784, 196), (2, 196, 49), (2, 49, 49), (2, 16, 16)]
    assert net.fc.in_features == 3840


def test_parameter_counts_at_101_classes(tmp_path):
    plain = meta_network(tmp_path, *OFF)
    assert num_params(plain) == 46_405_925  # spec D.1: 46.41 M
    assert not any(n.startswith(("tda_", "sda_")) for n, _ in plain.named_parameters())
    full = meta_network(tmp_path)
    assert num_params(full) - num_params(plain) == pytest.approx(31.9e6, abs=0.1e6)  # spec D.7
    assert num_params(full.tda_blocks) + num_params(full.tda_stem) == pytest.approx(30.3e6, abs=0.1e6)
    assert num_params(full.sda_blocks) == pytest.approx(1.4e6, abs=0.05e6)
    tda_off = meta_network(tmp_path, "model.network.tda.enabled=false")
    assert not hasattr(tda_off, "tda_blocks") and not any("tda" in n for n, _ in tda_off.named_parameters())


@pytest.mark.slow
def test_profile_counts_params_and_macs_of_the_plain_and_full_network(one_thread):
    """spec D.7: 33.67 GMACs (3D-R50) and 42.6 ± 0.3 (defaults) at 32×112², counted by `tempo.profile` as it
    counts any network (on the meta device: shapes only, no compute)."""
    def profile(*overrides: str) -> dict:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose("profile", overrides=["paths.output_dir=unused", *PAPER, "dataset.num_segments=32",
                                                "dataset.input_size=112", "profile.device=meta",
                                                "profile.repeats=0", *overrides])
        return profile_network(cfg)

    plain, full = profile(*OFF), profile()
    assert plain["params"]["total"] == 46_405_925 and full["params"]["total"] == 78_293_285
    assert plain["gmacs"]["total"] == pytest.approx(33.67, abs=0.01)
    assert full["gmacs"]["total"] == pytest.approx(42.6, abs=0.3)


# -- equivalence and initialisation ----------------------------------------------------------------------
def test_all_switches_off_is_the_plain_3d_resnet(tmp_path, clip, one_thread):
    cfg = compose_config([*TINY_3D, *OFF], tmp_path)
    net = instantiate(cfg.model.network)
    plain = instantiate(cfg.backbone)()
    assert isinstance(plain, ResNet3d) and set(dict(net.named_children())) == {"backbone", "dropout", "fc"}
    plain.load_state_dict(net.backbone.state_dict())
    fc = torch.nn.Linear(plain.out_channels, cfg.dataset.num_classes)
    fc.load_state_dict(net.fc.state_dict())
    for mode in (False, True):
        net.train(mode), plain.train(mode)
        expected = fc(plain(clip).mean(dim=(2, 3, 4)))
        out = net(clip)
        torch.testing.assert_close(out["logits"], expected, rtol=0, atol=0)
        assert "regularizers" not in out


def test_zero_gamma_makes_tda_the_identity_until_the_first_step(tmp_path, clip, one_thread):
    """ΔT = 0 at init (spec E.6); one SGD step later ΔT ≠ 0, and every TDA parameter then gets a gradient."""
    net = network(tmp_path, "model.network.sda.enabled=false", "model.network.fusion.mf=false",
                  "model.network.fusion.fuse_last_tda=false")
    f = net.forward_features(clip)
    assert all(torch.equal(level, z) for level, z in zip(f.levels, f.stage_outputs, strict=True))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    labels = torch.tensor([0, 1])
    for _ in range(2):
        opt.zero_grad()
        out = net(clip)
        (torch.nn.functional.cross_entropy(out["logits"], labels) + out["regularizers"]["div_t"]).backward()
        if _ == 0:
            opt.step()
    f = net.forward_features(clip)
    assert all((level - z).abs().sum() > 0 for level, z in zip(f.levels, f.stage_outputs, strict=True))
    dead = [n for n, p in net.named_parameters() if n.startswith("tda_") and not p.grad.abs().sum() > 0]
    assert not dead


def test_literal_eq8_counts_z_twice(tmp_path, clip, one_thread):
    net = network(tmp_path, "model.network.fusion.literal_eq8=true", "model.network.sda.enabled=false",
                  "model.network.fusion.fuse_last_tda=false")
    f = net.forward_features(clip)  # ΔT = 0 at init, so Z̄ = 2Z exactly
    assert all(torch.equal(level, 2 * z) for level, z in zip(f.levels, f.stage_outputs, strict=True))


def test_last_tda_is_fused_into_the_head_input(tmp_path, clip, one_thread):
    net = network(tmp_path, "model.network.sda.enabled=false")
    f = net.forward_features(clip)
    torch.testing.assert_close(f.levels[-1], f.stage_outputs[-1] + f.chain[-1], rtol=0, atol=0)
    # without the fusion nothing reads the last chain output: its ε is not built (it could never learn)
    unfused = network(tmp_path, "model.network.sda.enabled=false", "model.network.fusion.fuse_last_tda=false")
    assert not hasattr(unfused.tda_blocks["5"], "eps_conv") and hasattr(unfused.tda_blocks["4"], "eps_conv")
    assert len(unfused.forward_features(clip).chain) == 4


# -- training: losses and gradients -----------------------------------------------------------------------
def test_every_parameter_learns_and_the_loss_has_every_term(tmp_path, clip, one_thread):
    cfg = compose_config([*TINY_3D], tmp_path)
    net, loss_fn = instantiate(cfg.model.network), instantiate(cfg.model.loss)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    labels = torch.tensor([0, 3])
    for i in range(2):
        opt.zero_grad()
        out = net(clip)
        terms = loss_fn(out, labels)
        assert set(terms) == {"loss", "ce", "div_s", "div_t"} and torch.isfinite(terms["loss"])
        expected = terms["ce"] + 0.01 * terms["div_s"] + 0.001 * terms["div_t"]  # λ1, λ2 of spec D.6
        torch.testing.assert_close(terms["loss"], expected)
        if i == 0:  # L_t of spec D.5, brute force: 12 ordered pairs of cosines of the A_t pooled to the last
            temporal = net.forward_features(clip).temporal  # stage's size (T₅ × T₅), batch mean
            pooled = [torch.nn.functional.adaptive_avg_pool2d(a, temporal[-1].shape[-2:]).flatten(1) for a in temporal]
            brute = sum(torch.nn.functional.cosine_similarity(a, b, dim=1, eps=1e-8).mean()
                        for ia, a in enumerate(pooled) for ib, b in enumerate(pooled) if ia != ib)
            torch.testing.assert_close(terms["div_t"], brute, rtol=1e-4, atol=1e-6)
            assert 0 < terms["div_s"] < 12  # non-negative maps: each cosine in (0, 1), not all equal to 1
        terms["loss"].backward()
        if i == 0:
            opt.step()
    dead = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead, dead
    assert all(torch.isfinite(p.grad).all() for p in net.parameters())


def test_diversity_terms_alone_train_the_attention_projections(tmp_path, clip, one_thread):
    net = network(tmp_path)
    out = net(clip)  # no CE in this loss: the logits are left out of the graph
    (0.01 * out["regularizers"]["div_s"] + 0.001 * out["regularizers"]["div_t"]).backward()
    for i in ("2", "3", "4", "5"):
        for block in (net.tda_blocks[i], net.sda_blocks[i]):
            assert block.query.weight.grad.abs().sum() > 0 and block.key.weight.grad.abs().sum() > 0
    assert net.fc.weight.grad is None


@pytest.mark.parametrize("tda, sda, terms", [(True, False, {"div_t"}), (False, True, {"div_s"}), (False, False, set())])
def test_a_switched_off_module_drops_its_term(tmp_path, clip, tda, sda, terms, one_thread):
    net = network(tmp_path, f"model.network.tda.enabled={tda}", f"model.network.sda.enabled={sda}")
    assert set(net(clip).get("regularizers", {})) == terms
    net.eval()
    assert set(net(clip)) == {"logits"}


def test_mean_reduction_is_the_sum_over_12_pairs(tmp_path, clip, one_thread):
    torch.manual_seed(1)
    summed = network(tmp_path)
    mean = network(tmp_path, "model.network.div_reduction=mean")
    mean.load_state_dict(summed.state_dict())
    a, b = summed(clip)["regularizers"], mean(clip)["regularizers"]
    for name in ("div_s", "div_t"):
        torch.testing.assert_close(b[name] * 12, a[name])


# -- options ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("stage, channels", [(2, 32), (3, 32 + 64), (4, 32 + 64 + 128)])
def test_head_from_stage_cuts_the_network(tmp_path, clip, stage, channels, one_thread):
    net = network(tmp_path, f"model.network.head_from_stage={stage}")
    assert net.fc.in_features == channels
    assert sorted(net.tda_blocks) == [str(i) for i in range(2, stage + 1)] and net.tda_blocks[str(stage)].last
    assert all(isinstance(net.backbone.stages[i - 2], torch.nn.Identity) for i in range(stage + 1, 6))
    out = net(clip)
    assert out["logits"].shape == (2, 8) and set(out.get("regularizers", {})) == ({"div_s", "div_t"} if stage > 2
                                                                                   else set())
    single = network(tmp_path, f"model.network.head_from_stage={stage}", "model.network.fusion.mf=false")
    assert single.fc.in_features == 32 * 2 ** (stage - 2)


@pytest.mark.parametrize("option", [
    "model.network.tda.eps_order=conv_pool", "model.network.sda.kv_pool=1", "model.network.sda.kv_pool_stages=[]",
    "model.network.tda.zero_init_delta=false", "model.network.tda.scaled=false", "model.network.sda.scaled=false",
    "model.network.tda.delta_groups=1", "model.network.tda.reduction=8", "model.network.sda.reduction=4",
    "model.network.dropout=0.5", "model.network.fusion.fuse_last_tda=false", "model.network.fusion.mf=false"])
def test_every_option_builds_and_runs(tmp_path, option, one_thread):
    net = network(tmp_path, option)
    out = net(torch.randn(2, 3, 8, 32, 32))
    assert out["logits"].shape == (2, 8) and torch.isfinite(out["logits"]).all()
    out["logits"].sum().backward()


def test_init_checkpoint_loads_everything_but_fc(tmp_path, clip, one_thread):
    torch.manual_seed(0)
    trained = network(tmp_path)
    path = tmp_path / "stmanet.pt"
    torch.save(trained.state_dict(), path)
    torch.manual_seed(1)
    tuned = network(tmp_path, f"model.network.init_checkpoint={path}", "dataset.num_classes=5")
    own, source = tuned.state_dict(), trained.state_dict()
    assert all(torch.equal(own[k], source[k]) for k in own if not k.startswith("fc."))
    assert tuned.fc.out_features == 5


def test_bad_configs_name_the_key(tmp_path):
    with pytest.raises(InstantiationException, match="head_from_stage"):
        network(tmp_path, "model.network.head_from_stage=6")
    with pytest.raises(InstantiationException, match="backbone=resnet3d50_stmanet"):
        network(tmp_path, "backbone=resnet_tiny", base=[o for o in TINY_3D if not o.startswith("backbone=")])
    with pytest.raises(InstantiationException, match="div_reduction"):
        network(tmp_path, "model.network.div_reduction=avg")
    with pytest.raises(InstantiationException, match="sda.kv_pool_stages"):
        network(tmp_path, "model.network.sda.kv_pool_stages=[1,2]")
    with pytest.raises(InstantiationException, match="eps_order"):
        network(tmp_path, "model.network.tda.eps_order=pool")


# -- Kaiming initialisation (paper: "initialized using the Kaiming initialization strategy") -------------
def test_kaiming_init_of_every_aggregation_conv(tmp_path):
    """Convs feeding a BN: Kaiming fan_out (σ = √(2/fan_out)); attention projections: Kaiming fan_in
    (σ = √(2/fan_in)), not torch's default uniform (σ = √(1/(3·fan_in)), what they kept before)."""
    torch.manual_seed(0)
    net = meta_network(tmp_path).to_empty(device="cpu")  # paper widths: enough elements for a tight σ
    init_aggregation(net.tda_blocks), init_aggregation(net.sda_blocks)
    checked = 0
    for name, m in [*net.tda_blocks.named_modules(), *net.sda_blocks.named_modules()]:
        if isinstance(m, torch.nn.Conv3d) and m.weight.numel() > 20_000:
            receptive = m.weight[0, 0].numel()
            fan = m.weight.shape[1] * receptive if name.endswith(("query", "key")) else m.weight.shape[0] * receptive
            assert m.weight.std().item() == pytest.approx((2 / fan) ** 0.5, rel=0.05), name
            checked += 1
    assert checked >= 20


def test_fan_out_would_saturate_the_attention_at_the_paper_widths():
    """Why the projections take Kaiming's fan_in mode: at stage 5's width (C = 2048, T = 4, 4×4) the fan_out
    scale makes the TDA softmax rows nearly one-hot at init (no gradient through them); fan_in keeps them soft."""
    torch.manual_seed(0)
    z, chain = torch.relu(torch.randn(1, 2048, 4, 4, 4)), torch.relu(torch.randn(1, 1024, 4, 4, 4))
    tda = TemporalDeepAggregation(2048, 1024, last=True, chain_output=False)
    init_aggregation(tda)
    with torch.no_grad():
        soft = tda.attention(torch.cat([z, chain], 1)).max(-1).values.mean()
        for proj in (tda.query, tda.key):
            torch.nn.init.kaiming_normal_(proj.weight, mode="fan_out", nonlinearity="relu")
        saturated = tda.attention(torch.cat([z, chain], 1)).max(-1).values.mean()
    assert soft < 0.7 and saturated > 0.9
    sda = SpatialDeepAggregation(256, kv_pool=2)
    init_aggregation(sda)
    assert sda.query.weight.std().item() == pytest.approx((2 / 256) ** 0.5, rel=0.05)


# -- constructor groups (conf/model/stmanet.yaml: tda / sda / fusion) ------------------------------------
def test_option_groups_build_the_same_network_as_dataclasses(tmp_path, clip, one_thread):
    cfg = compose_config([*TINY_3D, "model.network.tda.reduction=8", "model.network.sda.enabled=false",
                          "model.network.fusion.mf=false"], tmp_path)
    torch.manual_seed(0)
    from_config = instantiate(cfg.model.network)
    torch.manual_seed(0)
    direct = STMANet(instantiate(cfg.backbone), cfg.dataset.num_classes, tda=TDAOptions(reduction=8),
                     sda=SDAOptions(enabled=False), fusion=FusionOptions(mf=False))
    assert from_config.state_dict().keys() == direct.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(from_config.state_dict().values(), direct.state_dict().values(),
                                                        strict=True))
    assert not from_config.use_sda and not from_config.use_mf and from_config.tda_blocks["2"].query.out_channels == 4
    with pytest.raises(InstantiationException, match=r"model.network.tda.enabled=false"):
        network(tmp_path, "model.network.tda=false")  # the flat switch of before: the error names the new key
    with pytest.raises(InstantiationException, match=r"model.network.sda: unknown option"):
        network(tmp_path, "+model.network.sda.kv_pooling=2")
