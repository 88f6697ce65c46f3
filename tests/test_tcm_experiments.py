"""TCM recipes and ablation sweeps (conf/experiment/tcm_*.yaml): numbers of spec B9, composition with
command-line overrides, the sweeps' job lists, and each sweep end to end at tiny scale through the CLI."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser

from tempo.run.build import build_module
from tests.conftest import CONF_DIR, TINY, compose_config

REPO = Path(__file__).resolve().parents[1]

# experiment → (dataset, test views, segments, depth, lr, reference batch, wd, milestones, epochs, clip, dropout,
#               partial BN)
RECIPES = {
    "tcm_sthv1_r50_8f": ("sthv1", "1x1", 8, 50, 0.01, 32, 5e-4, [30, 40, 45], 50, 200, 0.5, False),
    "tcm_sthv1_r50_16f": ("sthv1", "1x1", 16, 50, 0.01, 32, 5e-4, [30, 40, 45], 50, 200, 0.5, False),
    "tcm_sthv2_r50_8f": ("sthv2", "1x1", 8, 50, 0.01, 32, 5e-4, [30, 40, 45], 50, 200, 0.5, False),
    "tcm_k400_r50_8f": ("k400", "10x3", 8, 50, 0.02, 128, 1e-4, [20, 40], 50, 20, 0.5, False),
    "tcm_ucf101_r50": ("ucf101", "2x1", 8, 50, 0.001, 64, 5e-4, [10, 20], 25, 20, 0.8, True),
    "tcm_hmdb51_r50": ("hmdb51", "2x1", 8, 50, 0.001, 64, 5e-4, [10, 20], 25, 20, 0.8, True),
}
SWEEPS = {
    "tcm_ablation_position": {"model.network.positions": ["[]", "[2]", "[3]", "[4]", "[5]", "[2,3]", "[2,3,4]",
                                                          "[2,3,4,5]"]},
    "tcm_ablation_components": {"model.network.use_mtdm": ["false", "true"],
                                "model.network.use_tam": ["false", "true"]},
    "tcm_ablation_backbone": {"backbone": ["resnet18", "resnet50", "resnet101"],
                              "model.network.positions": ["[]", "[3]"]},
}


def experiments() -> list[str]:
    return sorted(p.stem for p in (Path(CONF_DIR) / "experiment").glob("tcm_*.yaml"))


def test_every_tcm_experiment_is_tested():
    assert set(experiments()) == set(RECIPES) | set(SWEEPS)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_numbers(name, tmp_path):
    dataset, views, segments, depth, lr, ref, wd, milestones, epochs, clip, dropout, pbn = RECIPES[name]
    cfg = compose_config([f"experiment={name}"], tmp_path)
    net = cfg.model.network
    assert net._target_ == "tempo.models.tcm.TCM" and list(net.positions) == [3] and net.temporal_shift
    assert (cfg.dataset.name, cfg.dataset.test_views, cfg.dataset.num_segments) == (dataset, views, segments)
    assert cfg.dataset.test_clips == {"1x1": 1, "2x1": 2, "10x3": 10}[views]
    assert cfg.backbone.depth == depth and cfg.backbone.pretrained == "imagenet"
    opt = cfg.optimizer
    assert (opt._target_, opt.lr, opt.momentum, opt.nesterov, opt.weight_decay) == ("torch.optim.SGD", lr, 0.9,
                                                                                     True, wd)
    assert cfg.model.bias_lr_mult == 2.0 and cfg.module.bias_lr_mult == 2.0
    assert list(cfg.schedule.factor.milestones) == milestones and cfg.schedule.factor.gamma == 0.1
    assert cfg.schedule.warmup_epochs == 0 and cfg.trainer.max_epochs == epochs
    assert (cfg.trainer.gradient_clip_val, cfg.trainer.gradient_clip_algorithm) == (clip, "norm")
    assert (net.dropout, net.partial_bn) == (dropout, pbn)


@pytest.mark.parametrize("name", sorted(SWEEPS))
def test_ablation_recipe_numbers(name, tmp_path):
    cfg = compose_config([f"experiment={name}"], tmp_path)
    assert (cfg.dataset.name, cfg.backbone.depth, cfg.backbone.pretrained) == ("sthv1", 18, "imagenet")
    assert (cfg.optimizer.lr, cfg.optimizer.nesterov, cfg.optimizer.weight_decay) == (0.02, True, 5e-4)
    assert list(cfg.schedule.factor.milestones) == [20, 30] and cfg.trainer.max_epochs == 40


@pytest.mark.parametrize("name", [*sorted(RECIPES), *sorted(SWEEPS)])
def test_experiment_sets_the_reference_batch_size(name, tmp_path):
    """The LR of a recipe is for its global batch (32 Sth, 128 Kinetics, 64 fine-tuning and R18 ablations)."""
    cfg = compose_config([f"experiment={name}"], tmp_path)
    expected = RECIPES[name][5] if name in RECIPES else 64
    assert cfg.module.reference_batch_size == expected, (
        "the experiment's module.reference_batch_size was overwritten: conf/train.yaml must list `- _self_` "
        "BEFORE `- experiment: null` in its defaults, or its own body (module: reference_batch_size: null) is "
        "merged after the experiment")
    cfg = compose_config([f"experiment={name}", "module.reference_batch_size=8"], tmp_path)
    assert cfg.module.reference_batch_size == 8


@pytest.mark.slow  # builds each recipe's full-size network
@pytest.mark.parametrize("name", [*sorted(RECIPES), *sorted(SWEEPS)])
def test_experiment_builds_offline(name, tmp_path):
    """Build every module without downloading (backbone.pretrained=null), R50/R101 included."""
    cfg = compose_config([f"experiment={name}", "backbone.pretrained=null"], tmp_path)
    module = build_module(cfg)
    assert module.network.positions == [3] and module.bias_lr_mult == 2.0
    assert module.network.fc.out_features == cfg.dataset.num_classes


def test_command_line_groups_and_keys_win(tmp_path):
    cfg = compose_config(["experiment=tcm_sthv1_r50_8f", "dataset=synthetic", "backbone=resnet_tiny",
                          "test_views=10x3", "model.network.positions=[2,3]"], tmp_path)
    assert (cfg.dataset.name, cfg.dataset.test_views, cfg.dataset.test_clips) == ("synthetic", "10x3", 10)
    # no ImageNet weights for the tiny CPU backbone: it starts from scratch
    assert cfg.backbone.stem_width == 16 and cfg.backbone.pretrained is None
    assert list(cfg.model.network.positions) == [2, 3] and cfg.optimizer.nesterov
    cfg = compose_config(["experiment=tcm_k400_r50_8f", "backbone=resnet101"], tmp_path)
    assert (cfg.backbone.depth, cfg.backbone.pretrained, cfg.dataset.test_views) == (101, "imagenet", "10x3")


@pytest.mark.parametrize("name", sorted(SWEEPS))
def test_sweep_params(name):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={name}"], return_hydra_config=True)
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    params = cfg.hydra.sweeper.params
    parser = OverridesParser.create()
    parsed = {k: [s.lower() for s in parser.parse_overrides([f"{k}={v}"])[0].sweep_string_iterator()]
              for k, v in params.items()}
    assert parsed == SWEEPS[name]


def _cli(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    # one intra-op thread: tiny models run faster on it, and far faster on a shared, busy CPU
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "tempo.train", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _job_overrides(sweep_dir: Path) -> list[list[str]]:
    jobs = sorted(sweep_dir.glob("*/summary.json"), key=lambda p: int(p.parent.name))
    return [yaml.safe_load((p.parent / ".hydra" / "overrides.yaml").read_text()) for p in jobs]


# one optimiser step per job on the tiny synthetic set; the dataset and backbone given on the command line
# replace the recipe's (a backbone on the command line also replaces the backbone sweep: ± TCM remain)
SWEEP_RUNS = {
    "tcm_ablation_position": [f"model.network.positions={v}" for v in SWEEPS["tcm_ablation_position"][
        "model.network.positions"]],
    "tcm_ablation_components": [f"model.network.use_mtdm={m}" for m in ("false", "true")],
    "tcm_ablation_backbone": ["model.network.positions=[]", "model.network.positions=[3]"],
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SWEEPS))
def test_sweep_runs_end_to_end_at_tiny_scale(name, tmp_path, synthetic_cache):
    tiny = [o for o in TINY if not o.startswith("backbone=")]
    sweep_dir = tmp_path / "sweep"
    res = _cli([f"experiment={name}", "dataset=synthetic", "backbone=resnet_tiny", *tiny, "trainer.max_steps=1",
                "trainer.limit_val_batches=1", "trainer.limit_test_batches=1", f"paths.cache_dir={synthetic_cache}",
                f"hydra.sweep.dir={sweep_dir}"], cwd=REPO)
    assert res.returncode == 0, res.stderr[-3000:]
    overrides = _job_overrides(sweep_dir)
    expected = SWEEP_RUNS[name]
    assert len(overrides) == len(expected) * (2 if name == "tcm_ablation_components" else 1)
    for want in expected:
        assert any(want in [o.lower() for o in job] for job in overrides), (want, overrides)
    for job in sorted(sweep_dir.glob("*/summary.json")):
        summary = json.loads(job.read_text())
        assert summary["model"] == "tempo.models.tcm.TCM" and summary["dataset"] == "synthetic"
        assert summary["global_step"] == 1 and "test/top1" in summary["test"]
        resolved = yaml.safe_load(Path(summary["config"]).read_text())
        assert resolved["backbone"]["pretrained"] is None and resolved["optimizer"]["nesterov"] is True
