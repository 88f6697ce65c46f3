"""3D ResNet: shapes, configurable kernels/strides, 2D→3D inflation (spec C1, D3.1–D3.2), parameter counts."""

import pytest
import torch
from torch import nn

from tempo.models.backbones import resnet as resnet_module
from tempo.models.backbones.resnet import ResNet
from tempo.models.backbones.resnet3d import Bottleneck3d, ResNet3d, inflate_state_dict

TINY = {"depth": 50, "layers": [1, 1, 1, 1], "widths": [8, 16, 32, 64], "stem": {"width": 8}}


def tiny3d(**kw):
    return ResNet3d(**{**TINY, **kw})


def tiny2d():
    return ResNet(depth=50, layers=[1, 1, 1, 1], widths=[8, 16, 32, 64], stem_width=8)


def count(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("t", [8, 32])
def test_stage_shapes_preserve_time(t):
    model = tiny3d().eval()
    outs = model.forward_stages(torch.randn(1, 3, t, 64, 64))
    assert [tuple(o.shape) for o in outs] == [(1, 32, t, 16, 16), (1, 64, t, 8, 8), (1, 128, t, 4, 4),
                                              (1, 256, t, 2, 2)]
    assert model.stage_channels == [32, 64, 128, 256] and model.out_channels == 256
    assert torch.equal(model(torch.ones(1, 3, t, 64, 64)), model.forward_stages(torch.ones(1, 3, t, 64, 64))[-1])
    assert model.stages == [model.layer1, model.layer2, model.layer3, model.layer4]


def test_slowonly_kernels_and_torchvision_names():
    model = ResNet3d(depth=50)
    assert model.conv1.kernel_size == (1, 7, 7) and model.conv1.stride == (1, 2, 2)
    assert model.maxpool.kernel_size == (1, 3, 3) and model.maxpool.stride == (1, 2, 2)
    for name, stage in zip(["layer1", "layer2", "layer3", "layer4"], model.stages, strict=True):
        for block in stage:
            assert block.conv1.kernel_size == ((3, 1, 1) if name in ("layer3", "layer4") else (1, 1, 1))
            assert block.conv2.kernel_size == (1, 3, 3)
    assert model.layer2[0].conv2.stride == (1, 2, 2) and model.layer2[0].downsample[0].stride == (1, 2, 2)
    keys = model.state_dict().keys()
    two_d = ResNet(depth=50).state_dict().keys()
    assert keys == two_d, "same state-dict names as torchvision's ResNet-50 (without fc)"


def test_stmanet_configuration_full_kernels_and_temporal_strides():
    """ST-MANet (spec D.1 of the sparse-attention/ST-MANet spec): 7×7×7 stem, pool with temporal stride 1,
    every conv2 3×3×3, stride 2 in time and space in res3-res5."""
    model = ResNet3d(depth=50, stem={"kernel": 7, "pool_kernel": 3, "pool_stride": [1, 2, 2]}, inflate=[1, 1, 1, 1],
                     inflate_style="3x3x3", temporal_strides=[1, 2, 2, 2])
    assert model.conv1.kernel_size == (7, 7, 7) and model.conv1.padding == (3, 3, 3)
    assert model.maxpool.kernel_size == (3, 3, 3) and model.maxpool.stride == (1, 2, 2)
    assert all(b.conv2.kernel_size == (3, 3, 3) and b.conv1.kernel_size == (1, 1, 1)
               for s in model.stages for b in s)
    assert model.layer3[0].conv2.stride == (2, 2, 2) and model.layer3[0].downsample[0].stride == (2, 2, 2)
    # 46.41M with a 101-way fc (that paper's baseline)
    assert count(model) + 2048 * 101 + 101 == 46_405_925
    tiny = tiny3d(stem={"width": 8, "kernel": 7, "pool_kernel": 3}, inflate=[1, 1, 1, 1], inflate_style="3x3x3",
                  temporal_strides=[1, 2, 2, 2])
    shapes = [tuple(o.shape[2:]) for o in tiny.forward_stages(torch.randn(1, 3, 32, 112, 112))]
    assert shapes == [(32, 28, 28), (16, 14, 14), (8, 7, 7), (4, 4, 4)]


def test_per_block_inflate_pattern():
    model = ResNet3d(depth=50, inflate=[1, [1, 0, 1, 0], [1, 0, 1, 0, 1, 0], [0, 1, 0]])
    flags = [[b.conv1.kernel_size[0] == 3 for b in s] for s in model.stages]
    assert flags == [[True] * 3, [True, False, True, False], [True, False] * 3, [False, True, False]]


@pytest.mark.parametrize("kwargs, match", [
    ({"depth": 34}, "backbone.depth=34"),
    ({"inflate_style": "2x1x1"}, "backbone.inflate_style"),
    ({"inflate": [0, 1]}, "one entry per stage"),
    ({"inflate": [0, 0, [1, 0], 1]}, "res4 lists 2 blocks"),
    ({"widths": [8, 16]}, "backbone.widths"),
    ({"stem": {"width": 8, "kernal": 7}}, "unknown keys"),
    ({"stem": {"kernel": [1, 7]}}, r"backbone.stem.kernel"),
])
def test_bad_configuration_fails_clearly(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tiny3d(**kwargs)


@pytest.mark.parametrize("depth, params", [(50, 31_634_496), (101, 59_539_520)])
def test_slowonly_parameter_counts(depth, params):
    """Standard 2D ResNet + the extra temporal taps of res4/res5 conv1 (spec C7 arithmetic)."""
    extra = {50: 2 * (512 * 256 + 5 * 1024 * 256 + 1024 * 512 + 2 * 2048 * 512),
             101: 2 * (512 * 256 + 22 * 1024 * 256 + 1024 * 512 + 2 * 2048 * 512)}[depth]
    assert count(ResNet3d(depth=depth)) == params == count(ResNet(depth=depth)) + extra


def test_inflated_conv_on_constant_clip_equals_2d_conv_inside_two_thirds_at_edges():
    """Spec D3.2: a (3,1,1)-inflated conv sees w2d/3 three times on interior frames, twice at the edges."""
    conv2d = nn.Conv2d(4, 6, 1, bias=False)
    conv3d = nn.Conv3d(4, 6, (3, 1, 1), padding=(1, 0, 0), bias=False)
    conv3d.load_state_dict(inflate_state_dict(conv3d.state_dict(), conv2d.state_dict()))
    frame = torch.randn(2, 4, 5, 5)
    out = conv3d(frame[:, :, None].expand(-1, -1, 6, -1, -1).contiguous())
    ref = conv2d(frame)
    for t in range(1, 5):
        torch.testing.assert_close(out[:, :, t], ref, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out[:, :, 0], ref * 2 / 3, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out[:, :, -1], ref * 2 / 3, atol=1e-6, rtol=1e-5)


def _random_bn_statistics(model):
    torch.manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.1)


@pytest.mark.parametrize("kw, margin", [
    ({}, 2),  # SlowOnly: two (3,1,1) convs (res4, res5) → two frames on each side see the zero padding
    ({"inflate": [0, 0, 0, 0]}, 0),  # no temporal kernel: every frame is the 2D network's
    ({"stem": {"width": 8, "kernel": 7, "pool_kernel": 3, "pool_stride": [1, 2, 2]}, "inflate": [1, 1, 1, 1],
      "inflate_style": "3x3x3"}, 8),  # 7×7×7 stem (3) + 4 × 3×3×3 (1 each) + temporal max-pool (1)
])
def test_inflated_network_on_constant_clip_matches_2d_resnet_per_frame(tmp_path, kw, margin):
    source = tiny2d().eval()
    _random_bn_statistics(source)
    torch.save({**source.state_dict(), "fc.weight": torch.zeros(10, 256), "fc.bias": torch.zeros(10)},
               tmp_path / "r50.pth")
    model = tiny3d(pretrained=str(tmp_path / "r50.pth"), **kw).eval()
    t = 2 * margin + 2
    frame = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = model(frame[:, :, None].expand(-1, -1, t, -1, -1).contiguous())
        ref = source(frame)
    assert out.shape[2] == t
    for i in range(margin, t - margin):
        torch.testing.assert_close(out[:, :, i], ref, atol=1e-5, rtol=1e-4)
    if margin:
        assert not torch.allclose(out[:, :, 0], ref, atol=1e-3), "edge frames do see the zero padding"


def test_inflation_divides_each_tap_and_copies_bn(tmp_path):
    source = tiny2d()
    _random_bn_statistics(source)
    torch.save(source.state_dict(), tmp_path / "r50.pth")
    model = tiny3d(pretrained=str(tmp_path / "r50.pth"))
    w2d = source.layer3[0].conv1.weight
    w3d = model.layer3[0].conv1.weight
    assert w3d.shape == (*w2d.shape[:2], 3, 1, 1)
    for tap in range(3):
        torch.testing.assert_close(w3d[:, :, tap], w2d / 3)
    assert torch.equal(model.conv1.weight[:, :, 0], source.conv1.weight)
    for key in ("bn1.running_var", "layer2.0.bn3.weight", "layer4.0.downsample.1.running_mean"):
        assert torch.equal(model.state_dict()[key], source.state_dict()[key])


def test_pretrained_imagenet_is_the_torchvision_url_inflated(monkeypatch):
    calls = {}
    source = ResNet(depth=50)

    def fake_load(url, **kw):
        calls.update(url=url, **kw)
        return {**source.state_dict(), "fc.weight": torch.zeros(1000, 2048), "fc.bias": torch.zeros(1000)}

    monkeypatch.setattr(resnet_module.torch.hub, "load_state_dict_from_url", fake_load)
    model = ResNet3d(depth=50, pretrained="imagenet")
    assert calls["url"].endswith("resnet50-0676ba61.pth") and calls["weights_only"] is True
    torch.testing.assert_close(model.layer4[2].conv1.weight[:, :, 1], source.layer4[2].conv1.weight / 3)
    assert torch.equal(model.layer1[0].conv2.weight[:, :, 0], source.layer1[0].conv2.weight)


def test_pretrained_mismatch_lists_the_keys(tmp_path):
    torch.save(ResNet(depth=18).state_dict(), tmp_path / "r18.pth")
    with pytest.raises(ValueError, match=r"does not fit this network: .*missing keys.*3D ResNet-50"):
        tiny3d(pretrained=str(tmp_path / "r18.pth"))
    state = tiny2d().state_dict()
    state["layer1.0.conv2.weight"] = torch.zeros(8, 8, 5, 5)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"shape mismatches \['layer1.0.conv2.weight"):
        tiny3d(pretrained=str(tmp_path / "bad.pth"))
    with pytest.raises(FileNotFoundError, match="null, imagenet or a .pth path"):
        tiny3d(pretrained=str(tmp_path / "missing.pth"))


def test_3d_state_dict_loads_as_is(tmp_path):
    source = tiny3d()
    torch.save(source.state_dict(), tmp_path / "r3d.pth")
    model = tiny3d(pretrained=str(tmp_path / "r3d.pth"))
    for k, v in source.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k


@pytest.mark.parametrize("zero_init_residual", [False, True])
def test_every_parameter_learns(zero_init_residual):
    """Zero-γ last BNs sit before the residual add (no ReLU between), so the block still learns."""
    torch.manual_seed(0)
    model = tiny3d(zero_init_residual=zero_init_residual)
    if zero_init_residual:
        assert all(b.bn3.weight.abs().sum() == 0 for s in model.stages for b in s if isinstance(b, Bottleneck3d))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(2, 3, 4, 32, 32)
    for _ in range(2):
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()
    for name, p in model.named_parameters():
        assert p.grad.abs().sum() > 0, name
