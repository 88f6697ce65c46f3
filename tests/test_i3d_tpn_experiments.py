"""I3D/TPN recipes (conf/experiment/{i3d,tpn}_*.yaml, spec C9/O13/O14), the sampler group and the 10x3_256
test views: recipe numbers, command-line precedence, and every recipe a few steps through the CLI."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hydra.utils import instantiate

from tempo.data.samplers import ConsecutiveSampler, DenseSampler, SegmentSampler
from tempo.run.build import build_module
from tests.conftest import CONF_DIR, TINY, compose_config

REPO = Path(__file__).resolve().parents[1]

# experiment → (model, dataset, depth, frames, sampler, milestones, epochs, grad clip)
RECIPES = {
    "i3d_k400_r50_32x2": ("i3d", "k400", 50, 32, "dense", [85, 105], 120, 40),
    "tpn_k400_r50_32x2": ("tpn", "k400", 50, 32, "dense", [85, 105], 120, 40),
    "tpn_k400_r101_32x2": ("tpn", "k400", 101, 32, "dense", [85, 105], 120, 40),
    "tpn_sthv1_r50": ("tpn", "sthv1", 50, 8, "segments", [85, 105], 120, 20),
    "tpn_sthv2_r50": ("tpn", "sthv2", 50, 8, "segments", [43, 53], 60, 20),
}
SAMPLER_CLASSES = {"dense": DenseSampler, "segments": SegmentSampler, "consecutive": ConsecutiveSampler}


def test_every_i3d_tpn_experiment_is_tested():
    names = {p.stem for p in (Path(CONF_DIR) / "experiment").glob("*.yaml") if p.stem.startswith(("i3d_", "tpn_"))}
    assert names == set(RECIPES)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_numbers(name, tmp_path):
    model, dataset, depth, frames, sampler, milestones, epochs, clip = RECIPES[name]
    cfg = compose_config([f"experiment={name}"], tmp_path)
    assert cfg.model.network._target_ == f"tempo.models.{model}.{model.upper()}"
    assert (cfg.dataset.name, cfg.dataset.num_segments, cfg.dataset.test_views) == (dataset, frames, "10x3_256")
    assert (cfg.dataset.test_clips, cfg.dataset.test_short_side) == (10, 256)
    assert cfg.dataset.datamodule.sampler._target_.endswith(SAMPLER_CLASSES[sampler].__name__)
    if sampler == "dense":
        assert (cfg.sampler.clip_len, cfg.sampler.interval) == (32, 2)
    assert cfg.backbone.depth == depth and cfg.backbone.pretrained == "imagenet"
    assert list(cfg.backbone.inflate) == [0, 0, 1, 1] and cfg.backbone.inflate_style == "3x1x1"
    opt = cfg.optimizer
    assert (opt._target_, opt.lr, opt.momentum, opt.nesterov, opt.weight_decay) == ("torch.optim.SGD", 0.01, 0.9,
                                                                                     True, 1e-4)
    assert cfg.module.reference_batch_size == 64 and cfg.model.bias_lr_mult == 1.0
    assert cfg.schedule.factor._target_ == "tempo.run.schedules.MultiStep"
    assert list(cfg.schedule.factor.milestones) == milestones and cfg.schedule.factor.gamma == 0.1
    assert (cfg.schedule.warmup_epochs, cfg.schedule.interval, cfg.trainer.max_epochs) == (0, "epoch", epochs)
    assert (cfg.trainer.gradient_clip_val, cfg.trainer.gradient_clip_algorithm) == (clip, "norm")
    assert cfg.model.network.dropout == 0.5
    if model == "tpn":
        assert cfg.model.aux_weight == 0.5 and dict(cfg.model.loss.weights) == {"logits": 1.0, "aux_logits": 0.5}
        assert list(cfg.model.network.levels) == [2, 3, 4, 5] and cfg.model.network.pyramid.flow == "cascade"
    if dataset != "k400":  # O14: train crops from short side 256 on Something-Something too
        assert cfg.dataset.resize._target_.endswith("ResizeShortSide") and cfg.dataset.resize.size == 256


@pytest.mark.slow  # builds each recipe's full-size network
@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_builds_offline_with_its_data_pipeline(name, tmp_path):
    cfg = compose_config([f"experiment={name}", "backbone.pretrained=null"], tmp_path)
    sampler = instantiate(cfg.dataset.datamodule.sampler)
    assert sampler.clip_frames == cfg.dataset.num_segments
    transforms = [instantiate(t) for t in cfg.dataset.datamodule.test_transforms]
    assert [type(t).__name__ for t in transforms] == ["ResizeShortSide", "ThreeCrop"]
    with torch.device("meta"):
        module = build_module(cfg)
    assert module.network.fc.out_features == cfg.dataset.num_classes


def test_command_line_groups_and_keys_win(tmp_path):
    cfg = compose_config(["experiment=tpn_k400_r50_32x2", "dataset=synthetic", "backbone=resnet3d_tiny",
                          "sampler=segments", "test_views=1x1", "model.network.pyramid.flow=parallel"], tmp_path)
    assert (cfg.dataset.name, cfg.dataset.test_views, cfg.dataset.test_clips) == ("synthetic", "1x1", 1)
    assert cfg.dataset.datamodule.sampler._target_.endswith("SegmentSampler")
    # no ImageNet weights for the tiny CPU backbone (8-wide stem): it starts from scratch
    assert cfg.backbone.stem.width == 8 and cfg.backbone.pretrained is None
    assert cfg.model.network.pyramid.flow == "parallel" and cfg.optimizer.nesterov
    cfg = compose_config(["experiment=i3d_k400_r50_32x2", "backbone=resnet3d101", "sampler.interval=4"], tmp_path)
    assert (cfg.backbone.depth, cfg.backbone.pretrained, cfg.sampler.interval) == (101, "imagenet", 4)


# ---- the sampler group -------------------------------------------------------------------------------------

DATASETS = sorted(p.stem for p in (Path(CONF_DIR) / "dataset").glob("*.yaml"))


@pytest.mark.parametrize("dataset", DATASETS)
def test_every_dataset_keeps_segments_by_default_and_takes_any_sampler(dataset, tmp_path):
    cfg = compose_config([f"dataset={dataset}"], tmp_path)
    assert instantiate(cfg.dataset.datamodule.sampler) == SegmentSampler(num_segments=cfg.dataset.num_segments)
    for name, cls in SAMPLER_CLASSES.items():
        cfg = compose_config([f"dataset={dataset}", f"sampler={name}", "dataset.num_segments=16"], tmp_path)
        sampler = instantiate(cfg.dataset.datamodule.sampler)
        assert type(sampler) is cls and sampler.clip_frames == 16


def test_dense_32x2_takes_every_second_frame_of_64(tmp_path):
    cfg = compose_config(["sampler=dense", "dataset.num_segments=32"], tmp_path)
    sampler = instantiate(cfg.dataset.datamodule.sampler)
    assert sampler == DenseSampler(clip_len=32, interval=2, loop_pad=False)
    clip = sampler.sample(300, np.random.default_rng(0))[0]
    assert len(clip) == 32 and set(np.diff(clip)) == {2} and clip[-1] - clip[0] + 1 == 63
    assert np.array_equal(sampler.sample(64)[0], np.arange(0, 64, 2))


def test_sampler_group_reaches_the_datasets(tiny_cfg):
    cfg = tiny_cfg("sampler=dense")
    datamodule = instantiate(cfg.dataset.datamodule)
    datamodule.setup("fit")
    train = datamodule.train_dataloader().dataset
    assert train.sampler == DenseSampler(clip_len=4, interval=2)
    cfg = tiny_cfg("sampler=dense", "test_views=10x3_256", "dataset.test_short_side=32")
    datamodule = instantiate(cfg.dataset.datamodule)
    datamodule.setup("test")
    test = datamodule.test_dataloader().dataset
    assert test.sampler == DenseSampler(clip_len=4, interval=2, num_clips=10)
    video = test[0]["video"]
    assert video.shape[0] == 30 and video.shape[-2:] == (32, 32)


# ---- every recipe through the CLI at tiny scale ------------------------------------------------------------

@pytest.mark.slow
def test_every_recipe_runs_two_steps_at_tiny_scale(tmp_path, synthetic_cache):
    """One multirun over the five recipes: synthetic data, resnet3d_tiny, 2 optimiser steps, 1 val/test batch."""
    tiny = [o for o in TINY if not o.startswith("backbone=")]
    sweep_dir = tmp_path / "sweep"
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    res = subprocess.run(
        [sys.executable, "-m", "tempo.train", "-m", f"experiment={','.join(sorted(RECIPES))}", "dataset=synthetic",
         "backbone=resnet3d_tiny", *tiny, "++dataset.test_short_side=32", "dataset.test_chunk=30",
         "trainer.max_steps=2", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
         f"paths.cache_dir={synthetic_cache}", f"hydra.sweep.dir={sweep_dir}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    summaries = sorted(sweep_dir.glob("*/summary.json"))
    assert len(summaries) == len(RECIPES)
    seen = set()
    for path in summaries:
        summary = json.loads(path.read_text())
        overrides = yaml.safe_load((path.parent / ".hydra" / "overrides.yaml").read_text())
        name = next(o.split("=", 1)[1] for o in overrides if o.startswith("experiment="))
        seen.add(name)
        model = RECIPES[name][0]
        assert summary["model"] == f"tempo.models.{model}.{model.upper()}" and summary["dataset"] == "synthetic"
        assert summary["global_step"] == 2 and "test/top1" in summary["test"]
        resolved = yaml.safe_load(Path(summary["config"]).read_text())
        assert resolved["backbone"]["pretrained"] is None and resolved["optimizer"]["nesterov"] is True
        assert resolved["trainer"]["gradient_clip_val"] == RECIPES[name][7]
    assert seen == set(RECIPES)
