"""model=i3d and model=tpn: outputs in train/eval, losses, parameter counts and GMACs (spec C5–C7), configs."""

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from tempo.analysis.counting import count_macs
from tempo.models.backbones.resnet import ResNet
from tempo.models.backbones.resnet3d import ResNet3d
from tempo.models.blocks.temporal_pyramid import TemporalPyramid
from tempo.models.i3d import I3D
from tempo.models.tpn import TPN
from tests.conftest import TINY

TINY_3D = [*TINY, "backbone=resnet3d_tiny"]


def tiny_backbone():
    return ResNet3d(depth=50, layers=[1, 1, 1, 1], widths=[8, 16, 32, 64], stem={"width": 8})


def count(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("t", [8, 32])
def test_i3d_logits_shape(t):
    model = I3D(tiny_backbone, num_classes=5).eval()
    video = torch.randn(2, 3, t, 32, 32)
    out = model(video)
    assert set(out) == {"logits"} and out["logits"].shape == (2, 5)
    assert torch.equal(model(video)["logits"], out["logits"]), "dropout inactive in eval"
    features = model.backbone(video).mean((2, 3, 4))
    torch.testing.assert_close(out["logits"], model.fc(features))


@pytest.mark.parametrize("t", [8, 32])
def test_tpn_returns_aux_logits_in_training_only(t):
    torch.manual_seed(0)
    model = TPN(tiny_backbone, num_classes=5)
    video = torch.randn(2, 3, t, 32, 32)
    out = model.train()(video)
    assert set(out) == {"logits", "aux_logits"}
    assert out["logits"].shape == out["aux_logits"].shape == (2, 5)
    assert set(model.eval()(video)) == {"logits"}


def test_tpn_heads_read_the_pyramid_and_raw_res4():
    model = TPN(tiny_backbone, num_classes=5, dropout=0.0, aux_dropout=0.0).train()
    video = torch.randn(2, 3, 8, 32, 32)
    out = model(video)
    # train-mode BN normalises with the batch's statistics, so recomputing gives the same values
    stages = model.backbone.forward_stages(video)
    torch.testing.assert_close(out["aux_logits"], model.aux_head(stages[2]), atol=1e-5, rtol=1e-4)
    fused = model.pyramid(stages)
    torch.testing.assert_close(out["logits"], model.fc(fused.mean((2, 3, 4))), atol=1e-5, rtol=1e-4)


def test_tpn_levels_choose_the_pyramid_inputs():
    model = TPN(tiny_backbone, num_classes=3, levels=[4, 5]).eval()
    assert [len(level) for level in model.pyramid.spatial_modulation.levels] == [1, 0]
    assert model(torch.randn(1, 3, 4, 32, 32))["logits"].shape == (1, 3)
    for bad in ([5], [3, 2], [1, 2], [2, 2, 3]):
        with pytest.raises(ValueError, match="model.network.levels"):
            TPN(tiny_backbone, num_classes=3, levels=bad)


def test_3d_models_reject_a_2d_backbone():
    for cls in (I3D, TPN):
        with pytest.raises(ValueError, match="needs a 3D backbone"):
            cls(lambda: ResNet(depth=18), num_classes=3)


def test_parameter_counts_r50_r101():
    """Spec C7's parts on the SlowOnly backbone (31,634,496 / 59,539,520): neck 37,798,912, aux head
    19,698,064, fc 819,600 at K=400."""
    with torch.device("meta"):
        i3d = I3D(ResNet3d(50), 400)
        tpn50 = TPN(ResNet3d(50), 400)
        tpn101 = TPN(ResNet3d(101), 400)
        no_aux = TPN(ResNet3d(50), 400, aux_weight=0)
    assert count(i3d) == 31_634_496 + 819_600 == 32_454_096
    assert count(tpn50) == 31_634_496 + 37_798_912 + 19_698_064 + 819_600 == 89_951_072
    assert count(tpn50) - count(tpn50.aux_head) == count(no_aux) == 70_253_008
    assert count(tpn101) == 59_539_520 + 37_798_912 + 19_698_064 + 819_600 == 117_856_096


def test_gmacs_at_32x224():
    """Spec C7: SlowOnly-R50 backbone 167.0 GMACs at 32×224²; the aux head adds 29.6 (training only).
    Counted on the meta device (shapes only), as tempo.profile counts."""
    with torch.device("meta"):
        i3d, tpn = I3D(ResNet3d(50), 400), TPN(ResNet3d(50), 400)
        clip = torch.empty(1, 3, 32, 224, 224)
    assert count_macs(i3d, clip)["total_macs"] / 1e9 == pytest.approx(167.0, rel=0.005)
    tpn_macs = count_macs(tpn, clip)["total_macs"] / 1e9
    assert tpn_macs == pytest.approx(175.45, rel=0.005)
    aux = count_macs(tpn.aux_head, torch.empty(1, 1024, 32, 14, 14, device="meta"))["total_macs"] / 1e9
    assert aux == pytest.approx(29.6, rel=0.005)


def test_every_parameter_learns():
    torch.manual_seed(0)
    for model in (I3D(tiny_backbone, 4), TPN(tiny_backbone, 4)):
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        video, labels = torch.randn(2, 3, 4, 32, 32), torch.tensor([0, 3])
        for _ in range(2):
            opt.zero_grad()
            out = model.train()(video)
            loss = sum(F.cross_entropy(v, labels) for v in out.values())
            loss.backward()
            opt.step()
        for name, p in model.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, f"{type(model).__name__}.{name}"


def test_tpn_config_loss_is_ce_plus_half_aux_and_aux_weight_zero_drops_the_head(tiny_cfg):
    torch.manual_seed(0)
    cfg = tiny_cfg("model=tpn", "backbone=resnet3d_tiny")
    net, loss = instantiate(cfg.model.network).train(), instantiate(cfg.model.loss)
    video, labels = torch.randn(2, 3, 4, 28, 28), torch.tensor([1, 2])
    out = net(video)
    terms = loss(out, labels)
    ce, aux = F.cross_entropy(out["logits"], labels), F.cross_entropy(out["aux_logits"], labels)
    torch.testing.assert_close(terms["loss"], ce + 0.5 * aux)
    torch.testing.assert_close(terms["aux"], aux)
    assert set(loss(net.eval()(video), labels)) == {"loss", "ce"}
    cfg = tiny_cfg("model=tpn", "backbone=resnet3d_tiny", "model.aux_weight=0")
    net, loss = instantiate(cfg.model.network).train(), instantiate(cfg.model.loss)
    assert net.aux_head is None
    out = net(video)
    assert set(out) == {"logits"}
    torch.testing.assert_close(loss(out, labels)["loss"], F.cross_entropy(out["logits"], labels))


@pytest.mark.parametrize("overrides", [
    [],
    ["model.network.pyramid.flow=parallel"],
    ["model.network.pyramid.ssm_groups=1", "model.network.pyramid.trm_rates=[1,1,2,4]"],
    ["model.network.levels=[4,5]"],
])
def test_tpn_config_options_instantiate(tiny_cfg, overrides):
    cfg = tiny_cfg("model=tpn", "backbone=resnet3d_tiny", *overrides)
    net = instantiate(cfg.model.network).eval()
    assert isinstance(net.pyramid, TemporalPyramid)
    assert net(torch.randn(1, 3, 4, 28, 28))["logits"].shape == (1, cfg.dataset.num_classes)
    if overrides:
        assert net.pyramid.flow == ("parallel" if "parallel" in overrides[0] else "cascade")


def test_i3d_config_and_init_checkpoint(tiny_cfg, tmp_path):
    cfg = tiny_cfg("model=i3d", "backbone=resnet3d_tiny")
    source = instantiate(cfg.model.network)
    torch.save({f"network.{k}": v for k, v in source.state_dict().items()}, tmp_path / "ckpt.pth")
    cfg = tiny_cfg("model=i3d", "backbone=resnet3d_tiny", "dataset.num_classes=3",
                   f"model.network.init_checkpoint={tmp_path / 'ckpt.pth'}")
    model = instantiate(cfg.model.network)
    assert model.fc.out_features == 3
    assert torch.equal(model.backbone.layer3[0].conv1.weight, source.backbone.layer3[0].conv1.weight)
