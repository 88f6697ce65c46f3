"""TCM network (tempo/models/tcm.py): parameter/GMAC targets of spec A6/B8/D2.10, positions, switches,
partial BN, optimiser groups, checkpoint initialisation."""

import json
import os
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import pytest
import torch
from torch import nn

from tempo.analysis.counting import count_macs, num_params
from tempo.models.backbones.resnet import ResNet
from tempo.models.blocks.tcm import TemporalCorrelationModule
from tempo.models.blocks.temporal_shift import TemporalShift
from tempo.models.tcm import TCM
from tempo.models.tsm import TSM
from tempo.models.weights import init_from_checkpoint
from tempo.run.module import param_groups
from tests.conftest import TINY, compose_config

pytestmark = pytest.mark.usefixtures("one_thread")


TINY_BACKBONE = partial(ResNet, depth=18, layers=[1, 1, 1, 1], widths=[16, 32, 64, 128], stem_width=16)


def tiny_tcm(**kw) -> TCM:
    return TCM(TINY_BACKBONE, num_classes=5, num_segments=4, **kw)


# -- spec A6 / B8 / D2.10: exact parameter counts ----------------------------------------------------------
@pytest.mark.parametrize(("depth", "block_params"), [(18, 21_243), (50, 71_163), (101, 71_163)])
def test_tcm_block_params_at_res3(depth, block_params):
    net = TCM(partial(ResNet, depth=depth), num_classes=174, num_segments=8)
    assert list(net.tcm_blocks) == ["res3"]
    block = net.tcm_blocks["res3"]
    assert block.in_channels == (128 if depth == 18 else 512) and block.patch_size == 15
    assert num_params(block) == block_params
    assert num_params(net) == num_params(TSM(partial(ResNet, depth=depth), 174, 8)) + block_params


def test_network_params_match_spec():
    assert num_params(TSM(partial(ResNet, depth=50), 400, 8)) == 24_327_632
    assert num_params(TCM(partial(ResNet, depth=50), 174, 8)) == 23_935_721


def test_tcm_block_gmacs_per_8_frame_r50_clip():
    """Conv part through the FLOP counter + correlation analytically: 0.436 + 0.158 = 0.594 GMACs (B8)."""
    block = TemporalCorrelationModule(8, 512, position=2)
    macs = count_macs(block, torch.randn(8, 512, 28, 28))
    assert macs["analytic_macs"] == {"correlation": 2 * 7 * 15 * 15 * 64 * 28 * 28}
    assert macs["counter_macs"] / 1e9 == pytest.approx(0.436, rel=0.02)
    assert macs["total_macs"] / 1e9 == pytest.approx(0.594, rel=0.02)
    # the correlation's GEMMs seen by the counter are replaced, not added
    assert macs["replaced_gemm_macs"] > macs["analytic_macs"]["correlation"]


# -- positions -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("res", [2, 3, 4, 5])
def test_tcm_at_each_position_keeps_shapes(res):
    net = tiny_tcm(positions=[res])
    block = net.tcm_blocks[f"res{res}"]
    assert block.in_channels == [16, 32, 64, 128][res - 2]
    assert block.patch_size == [15, 15, 7, 3][res - 2]
    seen = {}
    block.register_forward_hook(lambda m, args, out: seen.update(x=args[0].shape, y=out.shape))
    out = net(torch.randn(2, 3, 4, 32, 32))
    assert out["logits"].shape == (2, 5)
    assert seen["x"] == seen["y"] and seen["x"][:2] == (2 * 4, block.in_channels)


def test_several_positions_and_baseline():
    net = tiny_tcm(positions=[5, 2, 3, 4])
    assert net.positions == [2, 3, 4, 5] and list(net.tcm_blocks) == ["res2", "res3", "res4", "res5"]
    assert net(torch.randn(1, 3, 4, 32, 32))["logits"].shape == (1, 5)
    baseline = tiny_tcm(positions=[])
    assert not baseline.tcm_blocks
    torch.manual_seed(0)
    tsm = TSM(TINY_BACKBONE, 5, 4)
    assert num_params(baseline) == num_params(tsm)


def test_single_int_position():
    assert tiny_tcm(positions=4).positions == [4]


@pytest.mark.parametrize("bad", [[1], [6], [3, 3], [0, 3], ["res3"], None])
def test_bad_positions_name_the_key_and_allowed_values(bad):
    with pytest.raises(ValueError, match=r"model\.network\.positions"):
        tiny_tcm(positions=bad)


def test_temporal_shift_switch():
    def shifts(net: nn.Module) -> int:
        return sum(isinstance(m, TemporalShift) for m in net.modules())

    assert shifts(tiny_tcm()) == 4  # one per block of the 4 one-block stages
    plain = tiny_tcm(temporal_shift=False)
    assert shifts(plain) == 0 and list(plain.tcm_blocks) == ["res3"]
    assert plain(torch.randn(1, 3, 4, 32, 32))["logits"].shape == (1, 5)


def _dead_tcm_params(net: TCM, steps: int) -> tuple[list[str], int]:
    """Train `net` `steps` SGD steps on random clips; names of TCM parameters with an all-zero (or non-finite)
    gradient in the last step, and how many TCM parameters there are."""
    gen = torch.Generator().manual_seed(3)
    video, labels = torch.randn(2, 3, 4, 32, 32, generator=gen), torch.tensor([1, 4])
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    grads = {}
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(net(video)["logits"], labels).backward()
        grads = {f"{res}.{name}": p.grad.clone() for res, block in net.tcm_blocks.items()
                 for name, p in block.named_parameters()}
        opt.step()
    dead = [name for name, g in grads.items() if not (torch.isfinite(g).all() and g.abs().sum() > 0)]
    return dead, len(grads)


@pytest.mark.parametrize(("use_mtdm", "use_tam"), [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize(("init", "steps"), [("official", 1), ("identity", 2)])
def test_component_switches_and_inits_train_every_tcm_parameter(use_mtdm, use_tam, init, steps):
    """Every TCM parameter gets a non-zero gradient through the whole network: at the first step with the
    official init, at the second with the identity init (its zero gain has to move off 0 first)."""
    torch.manual_seed(0)
    net = tiny_tcm(use_mtdm=use_mtdm, use_tam=use_tam, init=init, positions=[2, 3])
    block = net.tcm_blocks["res3"]
    assert (block.mtdm is not None) == use_mtdm and (block.tam is not None) == use_tam
    dead, total = _dead_tcm_params(net, steps)
    if not (use_mtdm or use_tam):  # the "none" row is the identity: no parameters at all
        assert total == 0
    else:
        assert total > 0 and not dead, f"{len(dead)}/{total} TCM parameters got no gradient: {dead}"


def test_identity_init_tcm_network_equals_tsm():
    torch.manual_seed(0)
    tsm = TSM(TINY_BACKBONE, 5, 4).eval()
    tcm = tiny_tcm(init="identity", positions=[2, 3]).eval()
    missing = tcm.load_state_dict(tsm.state_dict(), strict=False).missing_keys
    assert missing and all(k.startswith("backbone.after_stage.") for k in missing)
    video = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        assert torch.equal(tcm(video)["logits"], tsm(video)["logits"])
        official = tiny_tcm(positions=[2, 3]).eval()
        official.load_state_dict(tsm.state_dict(), strict=False)
        assert not torch.equal(official(video)["logits"], tsm(video)["logits"])


def test_bad_init_names_the_config_key():
    with pytest.raises(ValueError, match=r"model\.network\.init"):
        tiny_tcm(init="zero_init_last_bn")


def test_reduction_conv_gets_gradient_through_the_network():
    net = tiny_tcm(positions=[2])
    net(torch.randn(2, 3, 4, 32, 32))["logits"].square().sum().backward()
    grad = net.tcm_blocks["res2"].mtdm.reduce[0].weight.grad
    assert grad is not None and grad.abs().sum() > 0


# -- BN and optimiser groups -----------------------------------------------------------------------------
def test_partial_bn_freezes_backbone_bns_but_not_tcm_bns():
    net = tiny_tcm(partial_bn=True, positions=[2, 4]).train()
    tcm_bns = [m for b in net.tcm_blocks.values() for m in b.modules() if isinstance(m, nn.BatchNorm2d)]
    frozen = net.partial_bn_norms()
    assert tcm_bns and not {id(m) for m in tcm_bns} & {id(m) for m in frozen}
    assert net.backbone.bn1.training and net.backbone.bn1 not in frozen
    assert all(not m.training and not m.weight.requires_grad for m in frozen)
    assert len(frozen) == sum(isinstance(m, nn.BatchNorm2d) for m in net.backbone.modules()) - len(tcm_bns) - 1
    before = [m.running_mean.clone() for m in tcm_bns]
    frozen_before = [m.running_mean.clone() for m in frozen]
    net(torch.randn(2, 3, 4, 32, 32))
    assert all(m.training and m.weight.requires_grad for m in tcm_bns)
    assert all(not torch.equal(b, m.running_mean) for b, m in zip(before, tcm_bns, strict=True))
    assert all(torch.equal(b, m.running_mean) for b, m in zip(frozen_before, frozen, strict=True))


def test_param_groups_bias_lr2_no_decay_on_bn_and_bias(tmp_path):
    cfg = compose_config([*TINY, "model=tcm"], tmp_path)
    assert cfg.model.bias_lr_mult == 2.0 and cfg.module.bias_lr_mult == 2.0 and cfg.module.no_decay_norm_bias
    net = tiny_tcm(positions=[3])
    groups = {g["name"]: g for g in param_groups(net, 5e-4, cfg.module.bias_lr_mult)}
    ids = {name: {id(p) for p in g["params"]} for name, g in groups.items()}
    assert (groups["bias"]["lr_mult"], groups["bias"]["weight_decay"]) == (2.0, 0.0)
    assert (groups["norm"]["lr_mult"], groups["norm"]["weight_decay"]) == (1.0, 0.0)
    assert (groups["decay"]["lr_mult"], groups["decay"]["weight_decay"]) == (1.0, 5e-4)
    assert ids["bias"] == {id(net.fc.bias)}  # every conv is bias-free
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert ids["norm"] == {id(p) for m in bns for p in m.parameters()}
    tcm_bn = net.tcm_blocks["res3"].tam.last_bn
    assert id(tcm_bn.weight) in ids["norm"] and id(tcm_bn.bias) in ids["norm"]
    assert id(net.fc.weight) in ids["decay"] and id(net.tcm_blocks["res3"].mtdm.reduce[0].weight) in ids["decay"]
    assert sum(len(v) for v in ids.values()) == len(list(net.parameters()))


# -- initialisation from a checkpoint (fine-tuning) --------------------------------------------------------
def test_init_checkpoint_loads_all_but_fc(tmp_path):
    source = tiny_tcm(positions=[2])
    path = tmp_path / "k400.ckpt"
    torch.save({"state_dict": {f"network.{k}": v for k, v in source.state_dict().items()}, "epoch": 3}, path)
    target = TCM(TINY_BACKBONE, num_classes=7, num_segments=4, positions=[2], init_checkpoint=str(path))
    for key, value in source.state_dict().items():
        if not key.startswith("fc."):
            assert torch.equal(target.state_dict()[key], value), key
    assert target.fc.weight.shape == (7, 128)
    with pytest.raises(ValueError, match="missing"):
        init_from_checkpoint(tiny_tcm(positions=[2, 3]), str(path))
    with pytest.raises(FileNotFoundError, match="init_checkpoint"):
        tiny_tcm(init_checkpoint=str(tmp_path / "nope.ckpt"))


# -- end to end on the synthetic set ---------------------------------------------------------------------
# The default synthetic run (8 motion classes, 512 train / 128 val clips, 8 segments of 56², 12 epochs),
# once with TSM and once with TCM, through the CLI: ≈ 50 s + 90 s on 2 idle cores. resnet_tiny's res3 map
# is 7×7 there, so the R50 res3 patch (P=15, for 28×28 maps) is wider than the whole map; the TCM uses P=7
# (±3 cells = ±24 input pixels, the official size for 14×14 maps), ≈ 40 % cheaper. Both models saturate near
# 95 % on this set (README, "TCM on the synthetic set"), so the test asks for TCM ≥ TSM − TOLERANCE: it
# catches a TCM that hurts learning, not a 1-clip difference. It also checks that the TCM branch is alive
# after training (the old zero-BN option trained TSM under the name TCM and passed this comparison).
SYNTHETIC_RUN = ["backbone=resnet_tiny", "logger=none", "callbacks=none", "trainer.enable_progress_bar=false",
                 "trainer.enable_model_summary=false"]
TCM_RUN = ["model=tcm", "model.network.patch_size=7", "model.network.init=official"]
TOLERANCE = 0.07


def _train_cli(args: list[str], run_dir: Path, cache: Path) -> tuple[dict, float]:
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "tempo.train", *args, *SYNTHETIC_RUN, f"paths.cache_dir={cache}",
                          f"hydra.run.dir={run_dir}"], cwd=Path(__file__).resolve().parents[1], env=env,
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads((run_dir / "summary.json").read_text()), time.perf_counter() - start


def _trained_tcm(run_dir: Path, cache: Path) -> TCM:
    """The TCM network of a finished run, rebuilt from the run's config, with its last checkpoint's weights."""
    from hydra.utils import instantiate

    cfg = compose_config([*TCM_RUN, "backbone=resnet_tiny"], run_dir / "rebuild", cache)
    net = instantiate(cfg.model.network)
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    net.load_state_dict({k.removeprefix("network."): v for k, v in state.items() if k.startswith("network.")})
    return net.eval()


def _branch_share(block: TemporalCorrelationModule, x: torch.Tensor) -> float:
    """‖TCM(x) − x‖ / ‖x‖: how much the block adds to its input."""
    with torch.no_grad():
        return float((block(x) - x).norm() / x.norm())


@pytest.mark.slow
def test_tcm_trains_on_synthetic_and_reaches_tsm_accuracy(tmp_path, synthetic_cache):
    tsm, tsm_s = _train_cli(["model=tsm"], tmp_path / "tsm", synthetic_cache)
    tcm, tcm_s = _train_cli(TCM_RUN, tmp_path / "tcm", synthetic_cache)
    print(f"synthetic, 12 epochs: TSM val top1 {tsm['best']['value']:.4f} test {tsm['test']['test/top1']:.4f} "
          f"({tsm_s:.0f} s), TCM val top1 {tcm['best']['value']:.4f} test {tcm['test']['test/top1']:.4f} "
          f"({tcm_s:.0f} s)")
    assert tcm["model"] == "tempo.models.tcm.TCM" and tcm["epochs"] == 12
    # the TCM learned: every BN shift left its init β=0, the gain (identity init) left 0, and the trained block
    # adds a residual (a dead branch adds exactly 0; the identity init gave ≈ 1 % of ‖x‖ after 12 epochs)
    net = _trained_tcm(tmp_path / "tcm", synthetic_cache)
    block = net.tcm_blocks["res3"]
    bns = [m for m in block.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 11 and all(m.bias.abs().amax() > 1e-5 for m in bns)
    if block.branch_gain is not None:
        assert block.branch_gain.abs().amax() > 1e-3
    seen = {}
    block.register_forward_pre_hook(lambda module, args: seen.update(x=args[0]))
    with torch.no_grad():
        net(torch.randn(2, 3, 8, 56, 56, generator=torch.Generator().manual_seed(0)))
    assert _branch_share(block, seen["x"]) > 1e-3
    assert tsm["best"]["value"] > 0.85 and tcm["best"]["value"] > 0.85  # chance is 1/8
    assert tcm["best"]["value"] >= tsm["best"]["value"] - TOLERANCE
    assert tcm["test"]["test/top1"] >= tsm["test"]["test/top1"] - TOLERANCE
