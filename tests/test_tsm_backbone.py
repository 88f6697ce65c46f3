"""TSM backbone properties (spec D1) and TSN consensus."""

import pytest
import torch
from torch import nn

from tempo.models.backbones import resnet as resnet_module
from tempo.models.backbones.resnet import BasicBlock, Bottleneck, ResNet
from tempo.models.blocks.temporal_shift import TemporalShift, temporal_shift
from tempo.models.tsm import TSM
from tempo.models.tsn import TSN


def tiny_backbone(**kw):
    return ResNet(depth=18, layers=[1, 1, 1, 1], widths=[8, 16, 16, 16], stem_width=8, **kw)


@pytest.mark.parametrize("c", [64, 72, 100])
def test_shift_moves_exactly_two_folds(c):
    n, t = 2, 5
    x = torch.randn(n * t, c, 3, 4)
    out = temporal_shift(x, t).view(n, t, c, 3, 4)
    v = x.view(n, t, c, 3, 4)
    f = c // 8
    assert torch.equal(out[:, :-1, :f], v[:, 1:, :f]) and (out[:, -1, :f] == 0).all()
    assert torch.equal(out[:, 1:, f : 2 * f], v[:, :-1, f : 2 * f]) and (out[:, 0, f : 2 * f] == 0).all()
    assert torch.equal(out[:, :, 2 * f :], v[:, :, 2 * f :])
    moved = (out != v).flatten(3).any(-1).any(0).any(0)
    assert moved.sum() == 2 * f


def test_shift_no_cross_video_leakage():
    t = 4
    x = torch.randn(3 * t, 16, 2, 2)
    y = x.clone()
    y[t : 2 * t] += torch.randn(t, 16, 2, 2)  # perturb video 1 only
    diff = (temporal_shift(x, t) - temporal_shift(y, t)).abs().flatten(1).sum(1).view(3, t)
    assert diff[0].sum() == 0 and diff[2].sum() == 0 and diff[1].sum() > 0


def test_shift_is_linear_and_its_gradient_is_the_opposite_shift():
    t, c = 4, 16
    a, b = torch.randn(2 * t, c, 2, 2), torch.randn(2 * t, c, 2, 2)
    assert torch.allclose(temporal_shift(2 * a + 3 * b, t), 2 * temporal_shift(a, t) + 3 * temporal_shift(b, t))
    x = a.clone().requires_grad_(True)
    g = torch.randn_like(a)
    temporal_shift(x, t).backward(g)
    # adjoint: the backward channel groups move the other way
    gv = g.view(2, t, c, 2, 2)
    f = c // 8
    expected = torch.zeros_like(gv)
    expected[:, 1:, :f] = gv[:, :-1, :f]
    expected[:, :-1, f : 2 * f] = gv[:, 1:, f : 2 * f]
    expected[:, :, 2 * f :] = gv[:, :, 2 * f :]
    assert torch.equal(x.grad, expected.view_as(x))
    # <shift(x), g> == <x, shift^T(g)>
    assert torch.allclose((temporal_shift(a, t) * g).sum(), (a * x.grad).sum(), atol=1e-4)


@pytest.mark.parametrize("block", [BasicBlock, Bottleneck])
def test_zeroed_residual_block_returns_relu_of_unshifted_input(block):
    planes = 8
    inplanes = planes * block.expansion
    m = block(inplanes, planes, shift=TemporalShift(4)).eval()
    nn.init.zeros_(m.last_bn.weight)
    nn.init.zeros_(m.last_bn.bias)
    x = torch.randn(8, inplanes, 5, 5)
    assert torch.equal(m(x), torch.relu(x))


def test_tsn_output_is_mean_of_per_frame_logits():
    model = TSN(tiny_backbone(), num_classes=5, num_segments=4, dropout=0.5).eval()
    video = torch.randn(2, 3, 4, 32, 32)
    frames = model.frame_logits(video)
    assert frames.shape == (2, 4, 5)
    torch.testing.assert_close(model(video)["logits"], frames.mean(1))
    # per-frame logits are what the 2D network gives each frame alone
    single = model.fc(model.backbone(video[:, :, 1]).mean((2, 3)))
    torch.testing.assert_close(frames[:, 1], single, atol=1e-5, rtol=1e-5)
    assert torch.equal(model(video)["logits"], model(video)["logits"]), "dropout inactive in eval"


def test_tsm_rejects_wrong_clip_length():
    model = TSM(tiny_backbone, num_classes=3, num_segments=4)
    with pytest.raises(ValueError, match="built for 4 segments"):
        model(torch.randn(1, 3, 8, 32, 32))


def test_tsm_uses_every_block_and_every_nth():
    shifts = lambda m: sum(isinstance(x, TemporalShift) for x in m.modules())  # noqa: E731
    assert shifts(TSM(lambda **kw: ResNet(depth=50, **kw), 10, 8).backbone) == 16
    assert shifts(ResNet(depth=101, num_segments=8, shift_every_n_blocks=2)) == 17
    assert shifts(TSN(lambda **kw: ResNet(depth=18, **kw), 10, 8).backbone) == 0


def count(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("depth, params", [(18, 11_176_512), (50, 23_508_032), (101, 42_500_160)])
def test_backbone_parameter_counts(depth, params):
    assert count(ResNet(depth=depth, num_segments=8)) == params


def test_tsm_r50_k400_parameter_count():
    assert count(TSM(lambda **kw: ResNet(depth=50, **kw), num_classes=400, num_segments=8)) == 24_327_632
    assert count(TSM(lambda **kw: ResNet(depth=50, **kw), num_classes=174, num_segments=8)) == 23_864_558


@pytest.mark.parametrize("depth, keys", [(18, 122), (50, 320)])
def test_state_dict_keys_are_torchvision_layout(depth, keys):
    sd = ResNet(depth=depth, num_segments=8).state_dict()
    assert len(sd) + 2 == keys  # torchvision's count includes fc.weight/fc.bias
    for k in ("conv1.weight", "bn1.running_var", "layer1.0.conv1.weight", "layer2.0.downsample.0.weight",
              "layer2.0.downsample.1.num_batches_tracked", "layer4.1.bn2.bias"):
        assert k in sd


def test_pretrained_from_path_loads_every_key_but_fc(tmp_path):
    source = ResNet(depth=18)
    state = {**source.state_dict(), "fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)}
    torch.save(state, tmp_path / "r18.pth")
    loaded = ResNet(depth=18, num_segments=8, pretrained=str(tmp_path / "r18.pth"))
    for k, v in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_pretrained_imagenet_uses_torchvision_url_with_weights_only(monkeypatch):
    calls = {}

    def fake_load(url, **kw):
        calls.update(url=url, **kw)
        return ResNet(depth=50).state_dict()

    monkeypatch.setattr(resnet_module.torch.hub, "load_state_dict_from_url", fake_load)
    ResNet(depth=50, pretrained="imagenet")
    assert calls["url"].endswith("resnet50-0676ba61.pth") and calls["weights_only"] is True


def test_pretrained_mismatch_and_missing_file_fail_clearly(tmp_path):
    torch.save(ResNet(depth=18).state_dict(), tmp_path / "r18.pth")
    with pytest.raises(ValueError, match=r"does not fit this network: .*missing.*\(ResNet-50\)"):
        ResNet(depth=50, pretrained=str(tmp_path / "r18.pth"))
    with pytest.raises(FileNotFoundError, match="null, imagenet or a .pth path"):
        ResNet(depth=18, pretrained=str(tmp_path / "missing.pth"))


def test_partial_bn_freezes_all_but_first():
    model = TSN(tiny_backbone(), num_classes=3, num_segments=2, partial_bn=True).train()
    norms = [m for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms[0].training and norms[0].weight.requires_grad
    assert all(not m.training and not m.weight.requires_grad for m in norms[1:])
