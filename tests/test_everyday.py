"""Everyday options: debug modes, local machine configs, the Optuna search, console scripts."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from tests.conftest import CONF_DIR, TINY, compose_config

REPO = Path(__file__).resolve().parents[1]
DEBUG_OPTIONS = sorted(p.stem for p in (REPO / "conf" / "debug").glob("*.yaml"))
SEARCH_OPTIONS = sorted(p.stem for p in (REPO / "conf" / "hparams_search").glob("*.yaml"))


def test_debug_options_are_the_documented_ones():
    assert DEBUG_OPTIONS == ["fdr", "limit", "overfit", "profiler"]


@pytest.mark.parametrize("option", DEBUG_OPTIONS)
def test_debug_option_composes_and_builds_a_trainer(option, tmp_path):
    from hydra.utils import instantiate

    cfg = compose_config([*TINY, f"debug={option}"], tmp_path / "run")
    trainer = instantiate(cfg.trainer, logger=False, callbacks=[], default_root_dir=str(tmp_path))
    expected = {"fdr": ("fast_dev_run", True), "overfit": ("overfit_batches", 2),
                "limit": ("limit_train_batches", 3), "profiler": ("limit_train_batches", 10)}[option]
    assert cfg.trainer[expected[0]] == expected[1]
    if option == "fdr":
        assert trainer.fast_dev_run == 1
    if option == "profiler":
        from lightning.pytorch.profilers import SimpleProfiler

        assert isinstance(trainer.profiler, SimpleProfiler)
        assert Path(trainer.profiler.dirpath) == tmp_path / "run"


@pytest.mark.parametrize("option", SEARCH_OPTIONS)
def test_hparams_search_composes_an_optuna_sweep(option, tmp_path):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[f"hparams_search={option}"], return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    assert "optuna" in sweeper._target_.lower()
    assert sweeper.direction == "maximize" and cfg.optimized_metric == "val/top1"
    assert set(sweeper.params) == {"optimizer.lr", "optimizer.weight_decay"}
    assert str(cfg.hydra.mode).endswith("MULTIRUN")
    # sized to try (6 trials × 3 epochs); the command line scales it
    assert (sweeper.n_trials, cfg.trainer.max_epochs) == (6, 3)
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        full = compose("train", overrides=[f"hparams_search={option}", "hydra.sweeper.n_trials=20",
                                           "trainer.max_epochs=12"], return_hydra_config=True)
    assert (full.hydra.sweeper.n_trials, full.trainer.max_epochs) == (20, 12)


def test_local_example_and_default_pickup(tmp_path):
    cfg = compose_config(["local=example"], tmp_path / "run")
    assert cfg.paths.data_dir == "/data" and cfg.dataset.num_workers == 16
    # conf/local/default.yaml is used by every run when it exists (a copy of conf/ here)
    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf)
    (conf / "local" / "default.yaml").write_text("# @package _global_\npaths:\n  data_dir: /cluster/data\n")
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        picked = compose("train", overrides=[f"paths.output_dir={tmp_path}"])
    assert picked.paths.data_dir == "/cluster/data"


def test_local_configs_are_git_ignored_but_the_example():
    ignored = subprocess.run(["git", "check-ignore", "conf/local/default.yaml", "conf/local/cluster.yaml"],
                             cwd=REPO, capture_output=True, text=True)
    assert ignored.stdout.split() == ["conf/local/default.yaml", "conf/local/cluster.yaml"]
    kept = subprocess.run(["git", "check-ignore", "conf/local/example.yaml"], cwd=REPO, capture_output=True)
    assert kept.returncode == 1  # not ignored


@pytest.mark.parametrize("script", ["tempo-train", "tempo-evaluate", "tempo-prepare", "tempo-profile", "tempo-report",
                                    "tempo-demo"])
@pytest.mark.slow
def test_console_scripts_are_installed(script):
    path = Path(sys.executable).parent / script
    assert path.is_file(), f"{path} missing: run `make setup` (pyproject.toml [project.scripts])"
    res = subprocess.run([str(path), "--help"], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert res.returncode == 0, res.stderr
    assert ("tempo" in res.stdout.lower()) or ("== Config ==" in res.stdout)


@pytest.mark.slow
def test_overfit_reaches_full_train_accuracy(tmp_path, synthetic_cache):
    from tempo.train import run

    cfg = compose_config([*TINY, "debug=overfit", "trainer.max_epochs=60", "optimizer.lr=0.05",
                          "schedule.warmup_epochs=0"], tmp_path / "run", synthetic_cache)
    summary = run(cfg)
    # train top-1 of an epoch is measured in train mode (dropout, random crops) on 16 clips: one clip moves it by
    # 6 points, so the check is that the network gets there (≥ 95 %) and stays near it over the last epochs
    top1 = [h["train/top1"] for h in summary["history"] if "train/top1" in h][-10:]
    assert max(top1) >= 0.95 and sum(top1) / len(top1) >= 0.85, top1


@pytest.mark.slow
def test_optuna_search_runs_two_trials(tmp_path, synthetic_cache):
    sweep = tmp_path / "sweep"
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "offline"}
    res = subprocess.run([sys.executable, "-m", "tempo.train", "hparams_search=tsm_synthetic_optuna",
                          "hydra.sweeper.n_trials=2", "hydra.sweeper.sampler.n_startup_trials=2", *TINY,
                          f"paths.cache_dir={synthetic_cache}", f"hydra.sweep.dir={sweep}", "print_config=false"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    jobs = sorted(p.parent.name for p in sweep.glob("*/summary.json"))
    assert jobs == ["0", "1"]
    result = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert set(result["best_params"]) == {"optimizer.lr", "optimizer.weight_decay"}
    values = [OmegaConf.load(sweep / j / "summary.json")["best"]["value"] for j in jobs]
    assert result["best_value"] == pytest.approx(max(values))


def test_config_tree_and_hyperparameters_reach_the_loggers(tmp_path, synthetic_cache, capsys):
    from tempo.train import run

    cfg = compose_config([*TINY, "logger=csv", "print_config=true", "trainer.limit_train_batches=1",
                          "trainer.limit_val_batches=1", "run_test=false"], tmp_path / "run", synthetic_cache)
    run(cfg)
    out = capsys.readouterr().out
    assert "config" in out and "tempo.models.tsm.TSM" in out and "backbone" in out
    hparams = yaml.safe_load((tmp_path / "run" / "csv" / "hparams.yaml").read_text())
    assert hparams["model"]["network"]["_target_"] == "tempo.models.tsm.TSM"
    assert hparams["dataset"]["num_segments"] == 4
    from hydra.utils import instantiate

    network = instantiate(cfg.model.network)
    assert hparams["params"]["total"] == sum(p.numel() for p in network.parameters())


@pytest.mark.parametrize("model, backbone", [("i3d", "resnet3d_tiny"), ("tpn", "resnet3d_tiny"),
                                             ("tdpn", "resnet3d_tiny"), ("stmanet", "resnet3d_stmanet_tiny"),
                                             ("tsm", "resnet_tiny")])
def test_a_model_brings_its_kind_of_backbone_and_the_command_line_wins(model, backbone, tmp_path):
    expected = OmegaConf.load(Path(CONF_DIR) / "backbone" / f"{backbone}.yaml")
    cfg = compose_config([f"model={model}"], tmp_path / "run")
    for key in ("widths", "layers"):
        if key in expected:
            assert list(cfg.backbone[key]) == list(expected[key]), (model, key)
    assert ("resnet3d" in cfg.backbone._target_) == ("resnet3d" in backbone)
    chosen = compose_config([f"model={model}", "backbone=resnet3d101"], tmp_path / "run")
    assert chosen.backbone.depth == 101 and list(chosen.backbone.widths) == [64, 128, 256, 512]
