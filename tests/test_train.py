"""End-to-end runs of the default pipeline on a tiny synthetic set."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tempo.run.config import ConfigError
from tempo.train import run
from tests.conftest import TINY, assert_counted_accuracy, compose_config

REPO = Path(__file__).resolve().parents[1]


def test_fit_writes_summary_checkpoints_and_curves(tiny_cfg):
    cfg = tiny_cfg("trainer.max_epochs=2", "logger=csv")
    summary = run(cfg)
    run_dir = Path(cfg.paths.output_dir)
    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert on_disk["best"]["metric"] == "val/top1"
    # the best is the highest val/top1 of the epochs, each counted over the 2 × K validation videos
    assert on_disk["best"]["value"] == max(row["val/top1"] for row in on_disk["history"])
    assert_counted_accuracy(on_disk["final"], "val", videos=2 * cfg.dataset.num_classes)
    assert {"test/top1", "test/top5", "test/mean_class"} <= on_disk["test"].keys()
    assert Path(on_disk["checkpoints"]["last"]).name == "last.ckpt" and Path(on_disk["checkpoints"]["best"]).is_file()
    assert Path(on_disk["config"]).is_file() and "RecognitionModule" in Path(on_disk["config"]).read_text()
    assert on_disk["wall_time_s"] > 0 and on_disk["epochs"] == 2 and on_disk["status"] == "completed"
    assert [h["epoch"] for h in on_disk["history"]] == [1, 2]  # 1-based wherever users read epochs
    assert on_disk["backbone"] == "resnet_tiny" and on_disk["dropped_missing"] == {"train": 0, "val": 0, "test": 0}
    best_epoch = on_disk["best"]["epoch"]
    assert Path(on_disk["checkpoints"]["best"]).name == f"best-epoch{best_epoch:03d}.ckpt"
    assert (run_dir / "curves.png").stat().st_size > 1000
    assert (run_dir / "csv" / "metrics.csv").is_file()
    assert on_disk["lr"]["lr"] == pytest.approx(0.01) and on_disk["decode_failures"] == 0
    assert summary["global_step"] == on_disk["global_step"] > 0


def _epoch_in(path) -> int:
    return torch.load(path, map_location="cpu", weights_only=True)["epoch"]  # 0-based inside the file


def test_last_checkpoint_is_the_final_state(tiny_cfg):
    """Issue 7 defect 1: last.ckpt was rewritten only with a new best. val/excluded is 0 every
    epoch, so only epoch 1 is ever "best"."""
    summary = run(tiny_cfg("trainer.max_epochs=3", "optimized_metric=val/excluded", "run_test=false"))
    last = summary["checkpoints"]["last"]
    assert Path(last).name == "last.ckpt" and _epoch_in(last) == 2
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == summary["global_step"]
    assert summary["best"]["epoch"] == 1 and Path(summary["checkpoints"]["best"]).name == "best-epoch001.ckpt"


def test_resume_continues_in_the_run_folder(tmp_path, synthetic_cache, recwarn):
    first = run(compose_config([*TINY, "optimized_metric=val/excluded", "logger=csv"], tmp_path / "first",
                               synthetic_cache))
    last = first["checkpoints"]["last"]
    assert _epoch_in(last) == 0
    resumed = run(compose_config([*TINY, "optimized_metric=val/excluded", "logger=csv", "trainer.max_epochs=2",
                                  f"ckpt_path={last}"], tmp_path / "second", synthetic_cache))
    assert resumed["run_dir"] == first["run_dir"] and (tmp_path / "second" / "resumed_run").is_symlink()
    assert resumed["epochs"] == 2 and resumed["global_step"] == 2 * first["global_step"]
    assert _epoch_in(resumed["checkpoints"]["last"]) == 1
    # the best score was reloaded: epoch 2 (same score) did not replace epoch 1 as best
    assert resumed["checkpoints"]["best"] == first["checkpoints"]["best"] and resumed["best"]["epoch"] == 1
    assert [h["epoch"] for h in resumed["history"]] == [1, 2]
    assert not [w for w in recwarn if "dirpath has changed" in str(w.message)]
    run_dir = Path(first["run_dir"])
    assert (run_dir / "csv" / "metrics.csv").is_file() and (run_dir / "csv" / "resumed-1" / "metrics.csv").is_file()


def test_max_steps_run_keeps_a_positive_lr(tiny_cfg):
    """Issue 7 defect 3: with max_epochs=-1 the cosine length was -1 and the LR 0 from step 9."""
    cfg = tiny_cfg("trainer.max_epochs=-1", "trainer.max_steps=12", "logger=csv", "callbacks=default",
                   "callbacks.progress=null", "trainer.log_every_n_steps=1", "run_test=false",
                   "trainer.check_val_every_n_epoch=100")
    summary = run(cfg)
    assert summary["global_step"] == 12
    with open(Path(cfg.paths.output_dir) / "csv" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    lrs = [float(r["lr-SGD/decay"]) for r in rows if r.get("lr-SGD/decay")]
    assert len(lrs) == 12 and min(lrs) > 0 and max(lrs) == pytest.approx(0.01, rel=0.05)


def test_lr_scaled_from_reference_batch(tiny_cfg):
    summary = run(tiny_cfg("module.reference_batch_size=32", "optimizer.lr=0.04", "run_test=false"))
    assert summary["lr"] == {"recipe_lr": 0.04, "reference_batch_size": 32, "global_batch_size": 8, "world_size": 1,
                             "lr": pytest.approx(0.01)}


@pytest.mark.slow
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


@pytest.mark.slow
def test_each_run_in_a_process_gets_its_own_wandb_run(tmp_path, synthetic_cache):
    """Jobs of a multirun share one process: a W&B run left open would swallow the next job's logs."""
    from tests.conftest import TINY, compose_config

    for job in ("0", "1"):
        cfg = compose_config([*TINY, "logger=wandb", "run_test=false", "trainer.limit_train_batches=1",
                              "trainer.limit_val_batches=1"], tmp_path / job, synthetic_cache)
        run(cfg)
    for job in ("0", "1"):
        assert len(list((tmp_path / job / "wandb").glob("offline-run-*"))) == 1, job


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


@pytest.mark.slow
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


@pytest.mark.slow
def test_diverging_run_stops_and_exits_non_zero(tmp_path, synthetic_cache):
    """Issue 7 defect 2: optimizer.lr=1e8 used to end "successfully" with a NaN best checkpoint."""
    run_dir = tmp_path / "run"
    res = _cli([*TINY, "optimizer.lr=1e8", "trainer.max_epochs=4", f"paths.cache_dir={synthetic_cache}",
                f"hydra.run.dir={run_dir}"], cwd=REPO)
    assert res.returncode == 1, res.stderr[-3000:]
    assert "training diverged" in res.stderr and "step" in res.stderr and "epoch" in res.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    failure = summary["failure"]
    assert summary["status"] == "diverged" and failure["reason"] in ("non-finite loss", "non-finite weights")
    if failure["reason"] == "non-finite loss":
        assert failure["indices"] and len(failure["videos"]) == len(failure["indices"])
        assert all(Path(v).exists() for v in failure["videos"])
    for kind in ("best", "last"):  # whatever was kept is finite
        if summary["checkpoints"][kind]:
            state = torch.load(summary["checkpoints"][kind], map_location="cpu", weights_only=True)
            assert all(torch.isfinite(t).all() for t in state["state_dict"].values() if t.is_floating_point())
    assert "test/top1" not in summary["test"]
