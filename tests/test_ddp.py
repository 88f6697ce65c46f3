"""Multi-process bookkeeping (issue 7 defect 4): 2 CPU processes through the CLI on a list set
with one 0-byte video count failures and exclusions over both processes, evaluate every video
exactly once, write summary.json once, and agree with one process at the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torch import nn

from tempo.run.config import ConfigError, check_config
from tests.conftest import CONF_DIR, TINY
from tests.conftest import train_cli as conftest_train_cli
from tests.official_fixtures import make_list_set

REPO = Path(__file__).resolve().parents[1]


def train_cli(tmp: Path, root: Path, lists: Path, run_dir: Path, *overrides: str) -> dict:
    args = [
        "dataset=list", f"dataset.root={root}", f"dataset.annotations={lists}", "dataset.num_classes=2",
        "dataset.short_side=36", "dataset.input_size=32", "dataset.num_segments=4", "dataset.num_workers=0",
        "dataset.datamodule.pin_memory=false", "backbone=resnet_tiny", "logger=csv", "callbacks=none",
        "trainer.max_epochs=2", "trainer.num_sanity_val_steps=0", "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false", "optimizer.lr=0.001", f"paths.cache_dir={tmp / 'cache'}",
        f"hydra.run.dir={run_dir}", *overrides,
    ]
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    res = subprocess.run([sys.executable, "-m", "tempo.train", *args], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-4000:]
    return json.loads((run_dir / "summary.json").read_text())


@pytest.mark.slow
def test_two_cpu_processes_count_and_evaluate_like_one(tmp_path):
    root, lists = make_list_set(tmp_path / "data")
    one = train_cli(tmp_path, root, lists, tmp_path / "one", "trainer=cpu", "dataset.batch_size=4")
    two = train_cli(tmp_path, root, lists, tmp_path / "two", "trainer=ddp_cpu", "trainer.devices=2",
                    "dataset.batch_size=2")
    for summary in (one, two):
        assert summary["excluded"] == {"val": 1, "test": 1}
        assert summary["test"]["test/excluded"] == 1.0 and summary["final"]["val/excluded"] == 1.0
        # the 0-byte training video is drawn once per epoch (by one of the processes), plus retries
        per_epoch = [h["train/decode_failures"] for h in summary["history"]]
        assert len(per_epoch) == 2 and min(per_epoch) >= 1, summary["history"]
        assert summary["decode_failures"] == sum(per_epoch)
        for key in ("test/top1", "test/mean_class", "val/top1"):
            value = summary["test"].get(key, summary["final"].get(key))
            assert (value * 4) == pytest.approx(round(value * 4)), (key, value)  # 4 valid videos, each once
    assert two["lr"]["global_batch_size"] == one["lr"]["global_batch_size"] == 4
    for key in ("test/top1", "test/mean_class"):
        assert abs(two["test"][key] - one["test"][key]) <= 0.25 + 1e-6  # at most one video differs
    # written once, by rank 0: no per-rank copies
    assert sorted(p.name for p in (tmp_path / "two").glob("summary*.json")) == ["summary.json"]
    assert (tmp_path / "two" / "curves.png").is_file()


def compose_trainer(tmp_path, *overrides):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("train", overrides=[f"paths.output_dir={tmp_path}", f"paths.cache_dir={tmp_path}/c",
                                           *overrides])


def test_strategy_is_a_plain_key_and_ddp_cpu_builds(tmp_path):
    cfg = compose_trainer(tmp_path, "trainer.strategy=ddp", "trainer.accelerator=cpu", "trainer.devices=1")
    assert cfg.trainer.strategy == "ddp"
    cfg = compose_trainer(tmp_path, "trainer=ddp_cpu")
    check_config(cfg)
    trainer = instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
    assert trainer.num_devices == 2 and type(trainer.strategy).__name__ == "DDPStrategy"


def test_ddp_without_cuda_names_the_cpu_option(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=r"trainer=ddp_cpu"):
        check_config(compose_trainer(tmp_path, "trainer=ddp"))
    with pytest.raises(ConfigError, match=r"trainer=cpu"):
        check_config(compose_trainer(tmp_path, "trainer=gpu"))


class NoNormNet(nn.Module):
    """A clip classifier without batch norm or dropout: BN normalises with each process's own batch
    and dropout draws per process, so those differ between 2 processes and 1 by design."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.conv = nn.Conv3d(3, 8, 3, stride=2, padding=1)
        self.fc = nn.Linear(8, num_classes)

    def forward(self, video: torch.Tensor) -> dict:
        return {"logits": self.fc(torch.relu(self.conv(video)).mean((2, 3, 4)))}


@pytest.mark.slow
def test_two_processes_take_the_steps_of_one(tmp_path, synthetic_cache):
    """2 CPU processes × batch 2 and 1 process × batch 4: the same samples and augmentations each step
    (SeededShuffle, per-sample draws), so after 12 steps the same weights up to all-reduce rounding."""
    common = [*TINY, "~model.network", "+model.network={_target_:tests.test_ddp.NoNormNet,num_classes:8}",
              "trainer.deterministic=true", "trainer.max_epochs=2", "run_test=false", "optimizer.lr=0.01",
              f"paths.cache_dir={synthetic_cache}"]

    def train(name: str, *overrides: str) -> dict:
        res = conftest_train_cli([*common, *overrides, f"hydra.run.dir={tmp_path / name}"])
        assert res.returncode == 0, res.stderr[-4000:]
        return json.loads((tmp_path / name / "summary.json").read_text())

    one = train("one", "trainer=cpu", "dataset.batch_size=4")
    two = train("two", "trainer=ddp_cpu", "trainer.devices=2", "dataset.batch_size=2")
    assert one["global_step"] == two["global_step"] == 12 and two["lr"]["world_size"] == 2
    weights = [torch.load(s["checkpoints"]["last"], map_location="cpu", weights_only=True)["state_dict"]
               for s in (one, two)]
    assert weights[0].keys() == weights[1].keys()
    for key, value in weights[0].items():
        torch.testing.assert_close(weights[1][key], value, atol=1e-6, rtol=1e-5, msg=key)
    losses = [row["train/loss_epoch"] for row in one["history"]]
    assert abs(losses[1] - losses[0]) > 1e-3  # it trained: the weights compared are not two initialisations
    for a, b in zip(one["history"], two["history"], strict=True):
        assert b["train/loss_epoch"] == pytest.approx(a["train/loss_epoch"], abs=1e-6)
        assert b["val/top1"] == a["val/top1"]
