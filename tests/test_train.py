"""End-to-end runs of the default pipeline on a tiny synthetic set."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tempo.config import ConfigError
from tempo.train import run

REPO = Path(__file__).resolve().parents[1]


def test_fit_writes_summary_checkpoints_and_curves(tiny_cfg):
    cfg = tiny_cfg("trainer.max_epochs=2", "logger=csv")
    summary = run(cfg)
    run_dir = Path(cfg.paths.output_dir)
    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert on_disk["best"]["metric"] == "val/top1"
    assert 0.0 <= on_disk["best"]["value"] <= 1.0
    assert {"test/top1", "test/top5", "test/mean_class"} <= on_disk["test"].keys()
    assert Path(on_disk["checkpoints"]["last"]).name == "last.ckpt" and Path(on_disk["checkpoints"]["best"]).is_file()
    assert Path(on_disk["config"]).is_file() and "RecognitionModule" in Path(on_disk["config"]).read_text()
    assert on_disk["wall_time_s"] > 0 and on_disk["epochs"] == 2
    assert [h["epoch"] for h in on_disk["history"]] == [0, 1]
    assert (run_dir / "curves.png").stat().st_size > 1000
    assert (run_dir / "csv" / "metrics.csv").is_file()
    assert on_disk["lr"]["lr"] == pytest.approx(0.01) and on_disk["decode_failures"] == 0
    assert summary["global_step"] == on_disk["global_step"] > 0


def test_resume_from_last_checkpoint(tiny_cfg):
    first = run(tiny_cfg("trainer.max_epochs=1"))
    last = first["checkpoints"]["last"]
    ckpt = torch.load(last, map_location="cpu", weights_only=True)  # loadable without pickled objects
    assert ckpt["epoch"] == 0
    resumed = run(tiny_cfg("trainer.max_epochs=2", f"ckpt_path={last}"))
    assert resumed["epochs"] == 2
    assert resumed["global_step"] == 2 * first["global_step"]


def test_lr_scaled_from_reference_batch(tiny_cfg):
    summary = run(tiny_cfg("module.reference_batch_size=32", "optimizer.lr=0.04", "run_test=false"))
    assert summary["lr"] == {"recipe_lr": 0.04, "reference_batch_size": 32, "global_batch_size": 8,
                             "lr": pytest.approx(0.01)}


def test_wandb_logger_runs_offline_without_key(tiny_cfg, monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc either
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    cfg = tiny_cfg("logger=wandb", "run_test=false")
    run(cfg)
    offline_runs = list(Path(cfg.paths.output_dir).glob("wandb/offline-run-*"))
    assert offline_runs, "W&B must fall back to an offline run when no key is configured"


def test_undecodable_training_video_is_skipped_and_counted(tiny_cfg):
    cfg = tiny_cfg("run_test=false", "dataset.datamodule.reader.seed=7")
    from hydra.utils import instantiate

    reader = instantiate(cfg.dataset.datamodule.reader)
    train = reader("train").records
    Path(train[0].path).write_bytes(b"")  # corrupt one clip in place
    Path(train[1].path).write_bytes(Path(train[2].path).read_bytes()[:300])  # truncated
    summary = run(cfg)
    assert summary["decode_failures"] >= 2
    assert summary["history"][0]["train/decode_failures"] >= 2


def test_bad_config_fails_at_startup(tiny_cfg):
    with pytest.raises(ConfigError, match="num_segments"):
        run(tiny_cfg("model.network.num_segments=3"))
    with pytest.raises(ConfigError, match="ckpt_path"):
        run(tiny_cfg("ckpt_path=/nonexistent/last.ckpt"))
    with pytest.raises(ConfigError, match="milestones"):
        run(tiny_cfg("schedule=multistep", "schedule.factor.milestones=[5,2]"))


def _cli(args, cwd, timeout=600):
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "tempo.train", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_unknown_option_lists_choices(tmp_path):
    res = _cli(["model=nonexistent"], cwd=tmp_path)
    assert res.returncode != 0
    assert "Could not find 'model/nonexistent'" in res.stderr and "tsm" in res.stderr


@pytest.mark.slow
def test_cli_multirun_sweeps_both_models(tmp_path, synthetic_cache):
    from tests.conftest import TINY

    args = ["-m", "model=tsn,tsm", *TINY, f"paths.cache_dir={synthetic_cache}",
            f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    res = _cli(args, cwd=REPO)
    assert res.returncode == 0, res.stderr[-3000:]
    summaries = sorted((tmp_path / "sweep").glob("*/summary.json"))
    assert len(summaries) == 2
    models = {json.loads(p.read_text())["model"] for p in summaries}
    assert models == {"tempo.models.tsn.TSN", "tempo.models.tsm.TSM"}

    from tempo.report import main as report

    assert report([str(tmp_path / "sweep")]) == 0
    lines = (tmp_path / "sweep" / "report.csv").read_text().splitlines()
    assert lines[0].startswith("job,model,best") and len(lines) == 3
    assert {line.split(",")[1] for line in lines[1:]} == {"tsn", "tsm"}
    assert (tmp_path / "sweep" / "report.png").is_file()
