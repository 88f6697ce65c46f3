"""Scale: the SLURM launcher agrees with the trainer, SyncBN on for multi-GPU, LR log shows the
world size, and a Hydra multirun of DDP jobs writes one folder (and one summary) per job."""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from tempo.run.module import RecognitionModule
from tests.conftest import CONF_DIR, compose_config
from tests.official_fixtures import make_list_set

REPO = Path(__file__).resolve().parents[1]


def compose_with_hydra(tmp_path, *overrides):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("train", overrides=[f"paths.output_dir={tmp_path}", *overrides], return_hydra_config=True)


@pytest.mark.parametrize("nodes,gpus", [(2, 4), (3, 8)])
def test_slurm_launcher_and_multinode_trainer_agree(tmp_path, nodes, gpus):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    cfg = compose_with_hydra(tmp_path, "hydra/launcher=slurm", "trainer=ddp_multinode",
                             f"trainer.num_nodes={nodes}", f"trainer.devices={gpus}", "dataset.num_workers=6")
    launcher, trainer = cfg.hydra.launcher, cfg.trainer
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert launcher.nodes == trainer.num_nodes == nodes
    assert launcher.gpus_per_node == launcher.tasks_per_node == trainer.devices == gpus  # one task per GPU
    assert launcher.cpus_per_task == 6  # the DataLoader workers of each rank
    assert trainer.strategy == "ddp" and trainer.sync_batchnorm and trainer.precision == "auto-mixed"


def test_slurm_launcher_keeps_the_plugin_options(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    cfg = compose_with_hydra(tmp_path, "hydra/launcher=slurm", "trainer=ddp_multinode",
                             "hydra.launcher.partition=gpu", "hydra.launcher.timeout_min=90")
    assert cfg.hydra.launcher.partition == "gpu" and cfg.hydra.launcher.timeout_min == 90
    assert cfg.hydra.launcher.submitit_folder.endswith(".submitit/%j")


@pytest.mark.parametrize("trainer", ["ddp", "ddp_multinode"])
def test_sync_batchnorm_on_for_multi_gpu(tmp_path, trainer):
    assert compose_config([f"trainer={trainer}"], tmp_path).trainer.sync_batchnorm is True


def test_lr_log_shows_world_size(tiny_cfg, caplog):
    from hydra.utils import instantiate

    from tempo.run.build import build_module

    cfg = tiny_cfg("module.reference_batch_size=4", "~schedule")
    module: RecognitionModule = build_module(cfg)

    class FakeTrainer:  # what configure_optimizers reads from a 4-process, accumulate-2 run
        world_size, accumulate_grad_batches, is_global_zero = 4, 2, True
        datamodule = instantiate(cfg.dataset.datamodule)
        estimated_stepping_batches, max_epochs = 10, 1

    module._trainer = FakeTrainer()
    with caplog.at_level(logging.INFO, logger="tempo.run.module"):
        module.configure_optimizers()
    batch = cfg.dataset.batch_size
    assert module.lr_info["world_size"] == 4 and module.lr_info["global_batch_size"] == batch * 8
    assert f"global batch {batch * 8} = {batch} per process × world size 4 × 2 accumulated" in caplog.text
    assert module.lr_info["lr"] == pytest.approx(module.lr_info["recipe_lr"] * batch * 8 / 4)


@pytest.mark.slow
def test_multirun_of_two_ddp_cpu_jobs_writes_two_job_folders(tmp_path):
    """`-m seed=0,1 trainer=ddp_cpu`: 2 jobs × 2 processes; each job one folder, one summary.json."""
    root, lists = make_list_set(tmp_path / "data")  # tiny list set (no per-rank data generation)
    sweep = tmp_path / "sweep"
    args = ["-m", "seed=0,1", "trainer=ddp_cpu", "trainer.devices=2", "dataset=list", f"dataset.root={root}",
            f"dataset.annotations={lists}", "dataset.num_classes=2", "dataset.short_side=36",
            "dataset.input_size=32", "dataset.num_segments=2", "dataset.batch_size=2", "dataset.num_workers=0",
            "dataset.datamodule.pin_memory=false", "backbone=resnet_tiny", "logger=none", "callbacks=none",
            "trainer.max_epochs=1", "trainer.num_sanity_val_steps=0", "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false", "run_test=false", f"paths.cache_dir={tmp_path / 'cache'}",
            f"hydra.sweep.dir={sweep}"]
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    res = subprocess.run([sys.executable, "-m", "tempo.train", *args], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=900)
    (tmp_path / "stderr.txt").write_text(res.stdout + res.stderr)
    assert res.returncode == 0, res.stderr[-4000:]
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert [p.name for p in jobs] == ["0", "1"]  # no stray folders from the extra ranks
    for job, seed in zip(jobs, (0, 1), strict=True):
        assert sorted(p.name for p in job.glob("summary*.json")) == ["summary.json"]
        summary = json.loads((job / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["run_dir"] == str(job)
        assert summary["lr"]["world_size"] == 2
        assert (job / ".hydra" / "overrides.yaml").read_text().count(f"seed={seed}") == 1
    assert not list(Path(tmp_path).glob("outputs"))  # rank 1 did not open a run folder of its own
