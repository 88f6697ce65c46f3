"""TDPN blocks (spec C1–C3, D3.3–D3.5): BoT MHSA with relative positions, the global and the local
temporal-difference modules: properties, parameter counts, and gradients after the first step."""

import pytest
import torch
from torch import nn

from tempo.models.backbones.resnet import ResNet
from tempo.models.blocks.bot_mhsa import BoTSelfAttention
from tempo.models.blocks.temporal_difference import (
    GlobalTemporalDifference,
    LocalTemporalDifference,
    rgb_differences,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def grads_after_first_step(module: nn.Module, run, steps: int = 1) -> dict[str, float]:
    """Take `steps` SGD steps on sum(run(module)²)-style losses, then one more backward; |grad| per param."""
    opt = torch.optim.SGD(module.parameters(), lr=0.1)
    for _ in range(steps):
        opt.zero_grad()
        run(module).backward()
        opt.step()
    opt.zero_grad()
    run(module).backward()
    return {name: float(p.grad.abs().sum()) if p.grad is not None else 0.0 for name, p in module.named_parameters()}


# ---------------------------------------------------------------- BoT MHSA (C1 / O4, D3.5)

def brute_force_mhsa(m: BoTSelfAttention, frame: torch.Tensor) -> torch.Tensor:
    """One frame (C, H, W): every query position and head by explicit loops over keys."""
    c, h, w = frame.shape
    d = m.head_dim
    q = torch.einsum("oc,chw->ohw", m.query.weight[:, :, 0, 0], frame)
    k = torch.einsum("oc,chw->ohw", m.key.weight[:, :, 0, 0], frame)
    v = torch.einsum("oc,chw->ohw", m.value.weight[:, :, 0, 0], frame)
    out = torch.zeros_like(frame)
    for head in range(m.heads):
        sl = slice(head * d, (head + 1) * d)
        for y in range(h):
            for x in range(w):
                qp = q[sl, y, x] / d ** 0.5
                logits = torch.empty(h, w, dtype=frame.dtype)
                for yy in range(h):
                    for xx in range(w):
                        rel = m.rel_height[yy - y + h - 1] + m.rel_width[xx - x + w - 1]
                        logits[yy, xx] = qp @ k[sl, yy, xx] + qp @ rel
                weights = logits.flatten().softmax(0)
                out[sl, y, x] = v[sl].reshape(d, h * w) @ weights
    return out


def test_mhsa_equals_brute_force_loop_float64():
    torch.manual_seed(0)
    m = BoTSelfAttention(8, height=3, width=5, heads=2).double()
    for p in m.parameters():  # larger than the init so the softmax is far from uniform
        nn.init.normal_(p, std=0.7)
    x = torch.randn(2, 8, 3, 3, 5, dtype=torch.float64)
    with torch.no_grad():
        out = m(x)
        for b in range(2):
            for t in range(3):
                assert (out[b, :, t] - brute_force_mhsa(m, x[b, :, t])).abs().max() < 1e-12


def test_mhsa_frames_are_independent():
    torch.manual_seed(1)
    m = BoTSelfAttention(8, 4, 4, heads=2).double()
    x = torch.randn(2, 8, 5, 4, 4, dtype=torch.float64)
    y = x.clone()
    y[1, :, 2] += torch.randn(8, 4, 4, dtype=torch.float64)
    with torch.no_grad():
        diff = (m(x) - m(y)).abs().amax(dim=(1, 3, 4))  # (B, T)
    assert diff[1, 2] > 1e-3
    diff[1, 2] = 0
    assert diff.max() == 0


def test_mhsa_without_relative_logits_is_permutation_equivariant():
    torch.manual_seed(2)
    m = BoTSelfAttention(8, 3, 4, heads=4).double()
    nn.init.zeros_(m.rel_height)
    nn.init.zeros_(m.rel_width)
    x = torch.randn(1, 8, 2, 3, 4, dtype=torch.float64)
    perm = torch.randperm(12)

    def permute(t):
        return t.flatten(3)[..., perm].view_as(t)

    with torch.no_grad():
        assert torch.allclose(m(permute(x)), permute(m(x)), atol=1e-12)
        nn.init.normal_(m.rel_height)  # with positions it is not
        assert not torch.allclose(m(permute(x)), permute(m(x)), atol=1e-6)


@pytest.mark.parametrize("stride", [1, 2])
def test_mhsa_shapes_and_size_check(stride):
    m = BoTSelfAttention(16, 6, 4, heads=4, stride=stride)
    out = m(torch.randn(2, 16, 3, 6, 4))
    assert out.shape == (2, 16, 3, 6 // stride, 4 // stride)
    with pytest.raises(ValueError, match="input_size"):
        m(torch.randn(1, 16, 2, 4, 4))  # training: the tables must match the map
    with pytest.raises(ValueError, match="heads"):
        BoTSelfAttention(10, 4, 4, heads=4)


def test_mhsa_resizes_its_tables_for_other_sizes_in_eval():
    """Fully convolutional testing (256² crops of a 224² net): tables linearly resized, centre kept."""
    torch.manual_seed(12)
    m = BoTSelfAttention(8, 4, 3, heads=2).eval()
    table_h, table_w = m.relative_tables(7, 3)
    assert table_h.shape == (13, 4) and table_w is m.rel_width
    assert torch.allclose(table_h[6], m.rel_height[3]) and torch.allclose(table_h[[0, -1]], m.rel_height[[0, -1]])
    assert torch.allclose(table_h[3], (m.rel_height[1] + m.rel_height[2]) / 2)  # offset −3 of 6 ↦ −1.5 of 3
    assert m(torch.randn(1, 8, 2, 7, 3)).shape == (1, 8, 2, 7, 3)
    assert m.relative_tables(4, 3)[0] is m.rel_height


def test_mhsa_parameter_counts_of_r50_res5():
    """Spec C7: 3·512² projections + (2H−1 + 2W−1)·128 tables; the three res5 blocks sum to 2,372,864."""
    first = BoTSelfAttention(512, 14, 14, heads=4, stride=2)
    later = BoTSelfAttention(512, 7, 7, heads=4)
    assert n_params(first) == 3 * 512 ** 2 + 2 * 27 * 128
    assert n_params(first) + 2 * n_params(later) == 2_372_864


def test_mhsa_every_parameter_gets_gradient():
    torch.manual_seed(3)
    m = BoTSelfAttention(8, 4, 4, heads=2)
    x = torch.randn(2, 8, 2, 4, 4)
    target = torch.randn(2, 8, 2, 4, 4)
    grads = grads_after_first_step(m, lambda mod: ((mod(x) - target) ** 2).mean())
    assert all(g > 0 for g in grads.values()), grads


# ---------------------------------------------------------------- global module (C2, D3.3)

def randomise_bn(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.5, 0.5)
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)


def test_global_module_is_identity_at_zero_gamma_in_train_and_eval():
    torch.manual_seed(4)
    g = GlobalTemporalDifference(32)
    assert torch.all(g.excitation.bn_e.weight == 0) and torch.all(g.excitation.bn_e.bias == 0)
    x = torch.randn(2, 32, 4, 6, 6)
    for mode in (True, False):
        g.train(mode)
        assert torch.equal(g(x), x)
    g.train()
    nn.init.ones_(g.excitation.bn_e.weight)  # not zero-initialised: it changes the features
    assert not torch.allclose(g(x), x, atol=1e-4)


def test_global_module_difference_edges_are_zero():
    torch.manual_seed(5)
    g = GlobalTemporalDifference(32)
    x = torch.randn(2, 32, 5, 6, 6)
    forward, backward = g.differences(x)
    assert forward.shape == backward.shape == (2, 2, 5, 6, 6)
    assert torch.all(forward[:, :, -1] == 0) and torch.all(backward[:, :, 0] == 0)
    # inside the clip, Eq. 2: C(F_t, F_t±1) = Z_t − Conv(Z_t±1), frame by frame
    z = g.bn(g.reduce(x))
    zs = g.smooth(z)
    for t in range(4):
        torch.testing.assert_close(forward[:, :, t], z[:, :, t] - zs[:, :, t + 1], rtol=0, atol=0)
        torch.testing.assert_close(backward[:, :, t + 1], z[:, :, t + 1] - zs[:, :, t], rtol=0, atol=0)
    assert forward[:, :, :-1].abs().min() > 0  # the smoothing conv makes Z_t and Conv(Z_t+1) differ everywhere


@pytest.mark.parametrize("train", [True, False])
def test_global_module_is_time_reversal_equivariant(train):
    torch.manual_seed(6)
    g = GlobalTemporalDifference(32, reduction=4, zero_init=False).double()
    randomise_bn(g)
    g.train(train)
    x = torch.randn(2, 32, 6, 7, 5, dtype=torch.float64)  # odd sizes: pooling and nearest up-sampling
    with torch.no_grad():
        out = g(x)
        flipped = g(x.flip(2))
    assert (flipped - out.flip(2)).abs().max() < 1e-12
    assert (out - x).abs().max() > 1e-3  # not trivially the identity


def test_global_module_parameter_counts():
    """Spec C2: 988 per res2 block (C=64), 3,576 per res3 block (C=128); 17,268 for R50's 3 + 4 blocks."""
    assert n_params(GlobalTemporalDifference(64)) == 988
    assert n_params(GlobalTemporalDifference(128)) == 3576
    assert 3 * 988 + 4 * 3576 == 17_268


def test_global_module_every_parameter_learns_after_the_first_step():
    """γ=β=0 of BN_e makes the first step reach only BN_e (the sigmoid keeps its gradient); after it,
    every parameter gets a non-zero gradient."""
    torch.manual_seed(7)
    g = GlobalTemporalDifference(32)
    x = torch.randn(2, 32, 4, 6, 6)
    target = torch.randn(2, 32, 4, 6, 6)
    first = grads_after_first_step(GlobalTemporalDifference(32), lambda mod: ((mod(x) - target) ** 2).mean(),
                                   steps=0)
    assert first["excitation.bn_e.weight"] > 0
    grads = grads_after_first_step(g, lambda mod: ((mod(x) - target) ** 2).mean())
    assert all(v > 0 for v in grads.values()), grads


# ---------------------------------------------------------------- local module (C3, D3.4)

def test_rgb_differences_values_edges_and_static_clip():
    torch.manual_seed(8)
    video = torch.randn(2, 3, 5, 4, 4)
    d = rgb_differences(video).view(2, 5, 4, 3, 4, 4)  # (B, T, k, RGB, H, W)
    for t in range(5):
        for i, k in enumerate(range(-2, 2)):
            a, b = min(max(t + k + 1, 0), 4), min(max(t + k, 0), 4)
            assert torch.equal(d[:, t, i], video[:, :, a] - video[:, :, b])
    assert torch.all(d[:, 0, :2] == 0) and torch.all(d[:, 4, 3] == 0)  # past the clip's edges
    static = video[:, :, :1].expand(-1, -1, 5, -1, -1)
    assert torch.all(rgb_differences(static) == 0)
    with pytest.raises(ValueError, match="num_differences"):
        rgb_differences(video, 3)


def tiny_local(variant: str = "low_resolution", **kw) -> LocalTemporalDifference:
    return LocalTemporalDifference(8, [8, 16, 32], [1, 1, 1], fuse_channels=[128, 256], variant=variant, **kw)


@pytest.mark.parametrize("variant", LocalTemporalDifference.VARIANTS)
def test_local_module_shapes_and_zero_at_init(variant):
    torch.manual_seed(9)
    m = tiny_local(variant)
    video = torch.randn(2, 3, 4, 64, 64)
    out = m(video, {"res4": (4, 4), "res5": (2, 2)})
    expected = {"res4": (2, 128, 4, 4, 4)} | ({"res5": (2, 256, 4, 2, 2)} if variant != "deep" else {})
    assert {k: tuple(v.shape) for k, v in out.items()} == expected
    assert all(torch.all(v == 0) for v in out.values())


@pytest.mark.parametrize("variant", LocalTemporalDifference.VARIANTS)
def test_local_module_every_parameter_learns_after_the_first_step(variant):
    torch.manual_seed(10)
    m = tiny_local(variant)
    video = torch.randn(2, 3, 4, 64, 64)
    sizes = {"res4": (4, 4), "res5": (2, 2)}
    targets = {k: torch.randn_like(v) for k, v in m(video, sizes).items()}

    def loss(mod):
        return sum(((mod(video, sizes)[k] - t) ** 2).mean() for k, t in targets.items())

    grads = grads_after_first_step(m, loss)
    assert all(v > 0 for v in grads.values()), [k for k, v in grads.items() if v == 0]
    assert any(v.abs().sum() > 0 for v in m(video, sizes).values())  # no longer a no-op


def test_default_local_module_follows_eq1_order():
    """Eq. 1, H = Upsmp(CONV(Downsmp(D))): the default variant downsamples the difference stack (to 4× the res5
    grid), runs the CNN there (its output lands on the res5 grid) and upsamples the result to res4 (nearest:
    every 2×2 block of the res4 addition is one value). The CNN-first variant (light) sees 2× downsampled
    differences and pools afterwards."""
    torch.manual_seed(12)
    sizes = {"res4": (4, 4), "res5": (2, 2)}
    seen = {}
    for variant in ("low_resolution", "light"):
        m = tiny_local(variant) if variant == "light" else LocalTemporalDifference(
            8, [8, 16, 32], [1, 1, 1], fuse_channels=[128, 256])  # the constructor's default
        for bn in m.laterals.values():
            nn.init.ones_(bn[1].weight)  # make the additions visible
        hook = m.cnn.register_forward_hook(
            lambda mod, args, out, v=variant: seen.update({v: (tuple(args[0].shape[-2:]), tuple(out.shape[-2:]))}))
        out = m(torch.randn(2, 3, 4, 64, 64), sizes)
        hook.remove()
        if variant == "low_resolution":
            res4 = out["res4"]
            assert torch.equal(res4, res4[..., ::2, ::2].repeat_interleave(2, -2).repeat_interleave(2, -1))
    assert seen["low_resolution"] == ((8, 8), sizes["res5"])  # Down to 4·h5, CNN lands on the res5 grid
    assert seen["light"] == ((32, 32), (8, 8))  # CNN first at half resolution, pooled to 4² / 2² afterwards


def test_local_module_parameter_counts():
    """Spec C3: the light module for R50 (stem 64, res2 3 bottlenecks, laterals to 1024 and 2048) has
    1,046,144 parameters; the deep one (stem..res4 copy + BN) ≈ +8.5M."""
    light = LocalTemporalDifference(64, [64, 128, 256], [3, 4, 6], fuse_channels=[1024, 2048])
    assert n_params(light) == 1_046_144
    deep = LocalTemporalDifference(64, [64, 128, 256], [3, 4, 6], fuse_channels=[1024, 2048], variant="deep")
    assert abs(n_params(deep) - 8.5e6) < 0.1e6
    with pytest.raises(ValueError, match="local_variant"):
        LocalTemporalDifference(64, [64], [3], fuse_channels=[1024, 2048], variant="medium")


def test_local_module_imagenet_init_averages_the_stem_kernel(tmp_path):
    """The CNN loads a torchvision-format ResNet-50 file: conv1's kernel averaged over RGB, replicated 12×."""
    torch.manual_seed(11)
    resnet = ResNet(depth=50)
    path = tmp_path / "r50.pth"
    torch.save(resnet.state_dict(), path)
    m = LocalTemporalDifference(64, [64, 128, 256], [3, 4, 6], fuse_channels=[1024, 2048], pretrained=str(path))
    expected = resnet.conv1.weight.mean(dim=1, keepdim=True).expand(-1, 12, -1, -1)
    assert torch.equal(m.cnn.conv1.weight, expected)
    assert torch.equal(m.cnn.layer1[2].conv3.weight, resnet.layer1[2].conv3.weight)
    assert torch.equal(m.cnn.bn1.running_var, resnet.bn1.running_var)
    torch.save({"conv1.weight": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match="local module weights"):
        LocalTemporalDifference(64, [64, 128, 256], [3, 4, 6], fuse_channels=[1024, 2048], pretrained=str(path))
