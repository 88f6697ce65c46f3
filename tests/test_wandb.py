"""W&B dashboards (offline): resolved config, params/GMACs summary, test confusion matrix and per-class table,
validation clips table; multirun jobs grouped by sweep folder and named by their overrides."""

import json
import struct
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import open_dict

from tempo.run.loggers import multirun_identity, wandb_logger
from tempo.train import run as train
from tests.conftest import CONF_DIR


def wandb_records(path: Path):
    """The protobuf records of an offline run file (`run-*.wandb`: a header, then LevelDB-log records)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, block, pending = path.read_bytes(), 7, 32768, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # block trailer
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 0:
            continue
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            yield record


def finished_records(path: Path, timeout: float = 60.0) -> list:
    """The records once the run's exit record is on disk (wandb-core may still be writing after `finish`)."""
    deadline = time.monotonic() + timeout
    while True:
        records = list(wandb_records(path)) if path.stat().st_size > 7 else []
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.5)


@pytest.fixture(scope="module")
def wandb_run(tmp_path_factory, synthetic_cache):
    import torch

    from tests.conftest import TINY, compose_config

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("wandb-run")
    try:
        summary = train(compose_config([*TINY, "logger=wandb", "callbacks=default", "~callbacks.progress"], out,
                                       synthetic_cache))
    finally:
        import wandb

        wandb.finish()
        torch.set_num_threads(threads)
    (run_dir,) = (out / "wandb").glob("offline-run-*")
    return summary, run_dir


@pytest.mark.slow
def test_offline_run_has_config_summary_and_test_tables(wandb_run):
    summary, run_dir = wandb_run
    (run_file,) = run_dir.glob("run-*.wandb")
    records = finished_records(run_file)
    config, scalars = {}, {}
    for record in records:
        kind = record.WhichOneof("record_type")
        if kind in ("config", "run"):  # the run record carries the config when it was set before it was sent
            items = record.config.update if kind == "config" else record.run.config.update
            config.update({item.key: item.value_json for item in items if item.key})
        if kind == "summary":
            scalars.update({item.key: item.value_json for item in record.summary.update if item.key})
    assert "model" in config, (sorted(config), sorted(scalars), run_file.stat().st_size)
    assert json.loads(config["model"])["network"]["_target_"] == "tempo.models.tsm.TSM"
    assert json.loads(config["model"])["network"]["num_segments"] == 4  # resolved, not ${dataset.num_segments}
    assert json.loads(config["dataset"])["input_size"] == 28
    assert int(scalars["params"]) == summary["complexity"]["params"] > 1000
    assert float(scalars["gmacs"]) == summary["complexity"]["gmacs"] > 0.001
    names = ["moving right slowly", "moving right fast", "moving left slowly", "moving left fast",
             "moving down slowly", "moving down fast", "moving up slowly", "moving up fast"]
    media = run_dir / "files" / "media" / "table"
    (per_class_file,) = (media / "test").glob("per_class_accuracy_*.table.json")
    per_class = json.loads(per_class_file.read_text())
    assert per_class["columns"] == ["class", "accuracy", "videos"]
    assert [row[0] for row in per_class["data"]] == names and all(row[2] == 2 for row in per_class["data"])
    mean = sum(row[1] for row in per_class["data"]) / 8
    assert mean == pytest.approx(summary["test"]["test/mean_class"], abs=1e-6)
    (confusion_file,) = (media / "test").glob("confusion_matrix_table_*.table.json")
    confusion = json.loads(confusion_file.read_text())
    assert sum(row[-1] for row in confusion["data"]) == 16  # every test video counted once
    assert {row[0] for row in confusion["data"]} == set(names)
    assert list((run_dir / "files" / "media" / "images" / "test").glob("confusion_png_*.png"))
    (clips_file,) = (media / "val").glob("clip_predictions_*.table.json")
    clips = json.loads(clips_file.read_text())
    assert clips["columns"] == ["clip", "true", "predicted", "probability"] and len(clips["data"]) == 4
    assert [row[0] for row in clips["data"]] == [0, 1, 2, 3]
    assert all(row[1] in names and row[2] in names and 0 < row[3] <= 1 for row in clips["data"])
    # the frame strips themselves, as images (a table cell would hold the string "Image")
    strips = sorted((run_dir / "files" / "media" / "images" / "val").glob("clips_*.png"))
    assert len(strips) == 4 and "Image" not in clips_file.read_text()


def test_no_anonymous_setting_reaches_wandb(tmp_path):
    logger = wandb_logger(offline=True, project="tempo", save_dir=str(tmp_path))
    assert "anonymous" not in logger._wandb_init


def test_multirun_jobs_are_grouped_by_sweep_and_named_by_overrides(tmp_path):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["model=tcm", "dataset.num_segments=16"], return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.mode = RunMode.MULTIRUN
        cfg.hydra.sweep.dir = str(tmp_path / "multirun" / "2026-12-02" / "05-00-00")
        cfg.hydra.job.num = 3
    assert multirun_identity() == (None, None)
    HydraConfig.instance().set_config(cfg)
    try:
        assert multirun_identity() == ("multirun/2026-12-02/05-00-00", "model=tcm,dataset.num_segments=16")
        logger = wandb_logger(offline=True, project="tempo", name="ignored", group=None, save_dir=str(tmp_path))
        assert logger._wandb_init["group"] == "multirun/2026-12-02/05-00-00"
        assert logger._wandb_init["name"] == "model=tcm,dataset.num_segments=16"
    finally:
        HydraConfig.instance().cfg = None
