"""T-CNN backbone and classifier (spec A; tempo/models/tcnn.py): shapes, parameter and MAC counts at the paper
size (on the meta device: no memory, no compute), dilation positions, residual switch, gradients, configs,
checkpoint initialisation and a tiny training run through the CLI."""

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from tempo.models.backbones.resnet import ResNet
from tempo.models.tcnn import STAGE_ROWS, TCNN, SeparableRow, Stem, TCNNBackbone
from tempo.run.build import build_module
from tests.conftest import TINY, assert_counted_accuracy

# tiny CPU models: one intra-op thread is far faster on the shared, busy machine
pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]
TINY_WIDTHS = [4, 8, 8, 8, 12, 12, 16]
TINY_BACKBONE = "backbone@model.network.backbone=tcnn_tiny"  # the T-CNN models' own backbone entry
TCNN_TINY = [o for o in TINY if not o.startswith("backbone=")] + [TINY_BACKBONE, "dataset.num_segments=8"]
# spec A.1: (stage, row within the stage, 1-based, counting the stage's first row) → temporal dilation
PAPER_DILATIONS = {(4, 4): 4, (4, 6): 4, (4, 8): 4, (5, 1): 4, (5, 5): 2, (5, 7): 4, (6, 4): 2, (6, 6): 2, (7, 4): 2}


def num_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def paper_tcnn(num_classes: int = 101) -> TCNN:
    with torch.device("meta"):
        return TCNN(num_classes).eval()


def test_paper_shapes_and_parameter_count():
    net = paper_tcnn(101)
    clip = torch.empty(2, 3, 16, 224, 224, device="meta")
    pooled, maps = net.features(clip)
    assert tuple(maps.shape) == (2, 512, 16, 14, 14) and tuple(pooled.shape) == (2, 512)
    assert tuple(net(clip)["logits"].shape) == (2, 101)
    assert num_params(net) == 2_457_797
    assert num_params(paper_tcnn(400)) == 2_611_184
    assert sum(len(rows) for rows in STAGE_ROWS) == 36


def test_stage_outputs_follow_table_1():
    net = paper_tcnn()
    x = torch.empty(1, 3, 16, 224, 224, device="meta")
    shapes = []
    for stage in net.backbone.stages:
        x = stage(x)
        shapes.append(tuple(x.shape[1:]))
    assert shapes == [(32, 16, 112, 112), (64, 16, 56, 56), (96, 16, 56, 56), (160, 16, 28, 28),
                      (224, 16, 28, 28), (288, 16, 14, 14), (512, 16, 14, 14)]


def test_macs_at_16x224_are_16_gmacs_per_spec_a4():
    net = paper_tcnn()
    x = torch.empty(1, 3, 16, 224, 224, device="meta")
    per_stage = []
    with FlopCounterMode(display=False) as counter:
        for stage in net.backbone.stages:
            before = counter.get_total_flops()
            x = stage(x)
            per_stage.append((counter.get_total_flops() - before) / 2e9)
        net.fc(x.mean(dim=(2, 3, 4)))
    total = counter.get_total_flops() / 2e9
    assert total == pytest.approx(16.0, abs=0.1)
    assert per_stage == pytest.approx([0.90, 0.44, 0.99, 3.98, 4.41, 2.21, 3.08], abs=0.011)


def test_dilated_rows_are_exactly_the_nine_of_table_1():
    net = TCNN(5, TCNNBackbone(TINY_WIDTHS))
    found = {}
    for s, stage in enumerate(net.backbone.stages, start=1):
        for r, row in enumerate(stage, start=1):
            conv = row.conv if isinstance(row, Stem) else row.depthwise
            assert conv.dilation[1:] == (1, 1) and conv.padding[0] == conv.dilation[0]
            if conv.dilation[0] > 1:
                found[(s, r)] = conv.dilation[0]
    assert found == PAPER_DILATIONS


def test_time_is_never_downsampled_and_space_by_16():
    net = TCNN(3, TCNNBackbone(TINY_WIDTHS)).eval()
    pooled, maps = net.features(torch.randn(1, 3, 8, 64, 48))
    assert tuple(maps.shape) == (1, 16, 8, 4, 3) and net.backbone.stride == 16
    strides = [stage[0].conv.stride if isinstance(stage[0], Stem) else stage[0].depthwise.stride
               for stage in net.backbone.stages]
    assert strides == [(1, 2, 2), (1, 2, 2), (1, 1, 1), (1, 2, 2), (1, 1, 1), (1, 2, 2), (1, 1, 1)]


def test_residual_rows_only_where_shapes_match_and_add_no_parameters():
    with_res, without = TCNNBackbone(TINY_WIDTHS, residual=True), TCNNBackbone(TINY_WIDTHS, residual=False)
    rows = [m for m in with_res.modules() if isinstance(m, SeparableRow)]
    assert all(r.residual == (r.depthwise.in_channels == r.bn.num_features and r.depthwise.stride == (1, 1, 1))
               for r in rows)
    with torch.device("meta"):
        paper = TCNNBackbone()
    # 35 separable rows − 3 strided (stages 2, 4, 6) − 3 widening at stride 1 (stages 3, 5, 7)
    assert sum(m.residual for m in paper.modules() if isinstance(m, SeparableRow)) == 29
    assert not any(m.residual for m in without.modules() if isinstance(m, SeparableRow))
    assert num_params(with_res) == num_params(without)
    without.load_state_dict(with_res.state_dict())
    x = torch.randn(1, 3, 4, 32, 32)
    assert not torch.allclose(with_res.eval()(x), without.eval()(x))


def test_every_parameter_gets_a_gradient_after_one_step():
    torch.manual_seed(0)
    net = TCNN(4, TCNNBackbone(TINY_WIDTHS), dropout=0.0)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    loss = torch.nn.functional.cross_entropy(net(torch.randn(3, 3, 8, 32, 32))["logits"], torch.tensor([0, 1, 2]))
    loss.backward()
    dead = [n for n, p in net.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not dead
    opt.step()


def test_bad_widths_and_backbone_fail_clearly():
    with pytest.raises(ValueError, match="backbone.widths"):
        TCNNBackbone([32, 64])
    with pytest.raises(ValueError, match="backbone.stage_strides"):
        TCNNBackbone(TINY_WIDTHS, stage_strides=[2, 2, 1, 2, 1, 3, 1])
    with pytest.raises(ValueError, match="must be a T-CNN backbone.*backbone@model.network.backbone=tcnn"):
        TCNN(3, backbone=lambda: torch.nn.Identity())
    with pytest.raises(ValueError, match="got ResNet"):
        TCNN(3, backbone=functools.partial(ResNet, depth=18))
    with pytest.raises(ValueError, match=r"\(B, 3, T, H, W\)"):
        TCNNBackbone(TINY_WIDTHS)(torch.randn(1, 4, 8, 32, 32))


@pytest.mark.parametrize("backbone", ["tcnn", "tcnn_tiny"])
def test_config_builds_the_model(tiny_cfg, backbone):
    cfg = tiny_cfg("model=tcnn", f"backbone@model.network.backbone={backbone}")
    module = build_module(cfg)
    assert isinstance(module.network, TCNN) and module.network.fc.out_features == cfg.dataset.num_classes
    expected = TINY_WIDTHS if backbone == "tcnn_tiny" else [32, 64, 96, 160, 224, 288, 512]
    assert module.network.backbone.widths == expected and module.network.backbone.residual
    assert module.network.dropout.p == 0.5


def test_the_paper_backbone_is_the_default_whatever_the_top_level_backbone(tiny_cfg):
    cfg = tiny_cfg("model=tcnn", "backbone=resnet18")
    assert cfg.model.network.backbone.widths == [32, 64, 96, 160, 224, 288, 512]
    assert list(cfg.model.network.backbone.stage_strides) == [2, 2, 1, 2, 1, 2, 1]
    net = build_module(tiny_cfg("model=tcnn", "model.network.backbone.residual=false")).network
    assert not net.backbone.residual


def test_backbone_pretrained_loads_every_row(tmp_path):
    source = TCNN(7, TCNNBackbone(TINY_WIDTHS))
    files = {"ckpt": {"state_dict": {f"network.{k}": v for k, v in source.state_dict().items()}},
             "network": source.state_dict(), "backbone": source.backbone.state_dict()}
    for name, state in files.items():
        torch.save(state, tmp_path / f"{name}.pth")
        loaded = TCNNBackbone(TINY_WIDTHS, pretrained=str(tmp_path / f"{name}.pth"))
        for key, value in source.backbone.state_dict().items():
            assert torch.equal(loaded.state_dict()[key], value), (name, key)
    with pytest.raises(ValueError, match="backbone.pretrained"):
        TCNNBackbone([4, 8, 8, 8, 12, 12, 24], pretrained=str(tmp_path / "backbone.pth"))


def test_init_checkpoint_loads_all_but_the_classifier(tmp_path):
    source = TCNN(7, TCNNBackbone(TINY_WIDTHS))
    path = tmp_path / "tcnn.ckpt"
    torch.save({"state_dict": {f"network.{k}": v for k, v in source.state_dict().items()}}, path)
    target = TCNN(3, TCNNBackbone(TINY_WIDTHS), init_checkpoint=str(path))
    for key, value in source.backbone.state_dict().items():
        assert torch.equal(target.backbone.state_dict()[key], value), key
    with pytest.raises(ValueError, match="does not fit"):
        TCNN(3, TCNNBackbone([4, 8, 8, 8, 12, 12, 24]), init_checkpoint=str(path))


@pytest.mark.slow
def test_cli_trains_tcnn_on_the_synthetic_set(tmp_path, synthetic_cache):
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    run_dir = tmp_path / "run"
    res = subprocess.run([sys.executable, "-m", "tempo.train", "model=tcnn", *TCNN_TINY, "trainer.max_steps=2",
                          "logger=csv", f"paths.cache_dir={synthetic_cache}", f"hydra.run.dir={run_dir}"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["model"] == "tempo.models.tcnn.TCNN" and summary["global_step"] == 2
    assert_counted_accuracy(summary["test"], "test", videos=2 * 8)  # test = val: 2 videos × 8 classes
