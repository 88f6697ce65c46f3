"""The front door: typed values checked at start-up, user errors as a message and exit status 2."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.errors import InstantiationException

from tempo.errors import ConfigError, MissingDataError
from tempo.run.config import check_bounds, check_config
from tempo.run.frontdoor import USER_ERROR_STATUS, user_errors
from tests.conftest import REPO, TINY, compose_config
from tests.test_configs import options


@pytest.mark.parametrize(("override", "message"), [
    ("optimizer.lr=abc", "optimizer.lr must be a number > 0, got 'abc'"),
    ("optimizer.lr=0", "optimizer.lr must be a number > 0, got 0"),
    ("optimizer.weight_decay=-1e-4", "optimizer.weight_decay must be a number ≥ 0"),
    ("optimizer.momentum=1.5", "optimizer.momentum must be a number in [0, 1)"),
    ("dataset.batch_size=0", "dataset.batch_size must be an integer ≥ 1, got 0"),
    ("dataset.batch_size=2.5", "dataset.batch_size must be an integer ≥ 1, got 2.5"),
    ("dataset.num_workers=-1", "dataset.num_workers must be an integer ≥ 0"),
    ("dataset.num_segments=0", "dataset.num_segments must be an integer ≥ 1"),
    ("dataset.input_size=big", "dataset.input_size must be an integer ≥ 1, got 'big'"),
    ("trainer.max_epochs=ten", "trainer.max_epochs must be an integer ≥ -1 (or null), got 'ten'"),
    ("trainer.accumulate_grad_batches=0", "trainer.accumulate_grad_batches must be an integer ≥ 1"),
    ("schedule.warmup_epochs=-2", "schedule.warmup_epochs must be a number ≥ 0"),
    ("schedule.warmup_start_factor=0", "schedule.warmup_start_factor must be a number in (0, 1]"),
    ("seed=true", "seed must be an integer, got True"),
])
def test_typed_values_are_checked_at_startup(override, message, tmp_path):
    cfg = compose_config([*TINY, override], tmp_path)
    with pytest.raises(ConfigError) as err:
        check_config(cfg)
    assert message in str(err.value)


def test_every_problem_is_listed_at_once(tmp_path):
    cfg = compose_config([*TINY, "optimizer.lr=abc", "dataset.batch_size=0"], tmp_path)
    with pytest.raises(ConfigError, match=r"(?s)optimizer\.lr.*dataset\.batch_size"):
        check_bounds(cfg)


@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_recipe_passes_the_value_checks(experiment, tmp_path):
    check_bounds(compose_config([f"experiment={experiment}"], tmp_path))


def test_user_error_exits_2_with_the_message_alone(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    log_file = tmp_path / "train.log"
    handler = logging.FileHandler(log_file)
    logging.getLogger().addHandler(handler)
    try:
        @user_errors
        def task(cfg):
            raise ConfigError("optimizer.lr must be a number > 0, got 'abc'")

        with pytest.raises(SystemExit) as exit_:
            task(None)
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    assert exit_.value.code == USER_ERROR_STATUS == 2
    err = capsys.readouterr().err
    assert err.splitlines() == ["error: optimizer.lr must be a number > 0, got 'abc'", f"(log: {log_file})"]
    assert "optimizer.lr must be a number > 0" in log_file.read_text()


def test_wrapped_user_error_is_found_and_bugs_keep_their_traceback(monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)

    @user_errors
    def wrapped(cfg):
        try:
            raise MissingDataError("annotation list x.txt does not exist")
        except MissingDataError as err:  # as hydra.utils.instantiate wraps what a target raises
            raise InstantiationException("Error in call to target") from err

    with pytest.raises(SystemExit) as exit_:
        wrapped(None)
    assert exit_.value.code == 2

    @user_errors
    def bug(cfg):
        raise ValueError("a bug, not the user's")

    with pytest.raises(ValueError, match="a bug"):
        bug(None)
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")

    @user_errors
    def config(cfg):
        raise ConfigError("bad value")

    with pytest.raises(ConfigError):  # the full traceback on request
        config(None)


def _command(module: str, args: list[str], cwd, **env) -> subprocess.CompletedProcess:
    environ = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": str(REPO), **env}
    environ.pop("HYDRA_FULL_ERROR", None)
    environ.update(env)
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=environ, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize(("module", "args", "message"), [
    ("tempo.train", ["model=tcm", "dataset=sthv1", "paths.data_dir=nodata"], "the sthv1 videos folder"),
    ("tempo.train", ["optimizer.lr=abc"], "optimizer.lr must be a number > 0, got 'abc'"),
    ("tempo.evaluate", [], "ckpt_path is required"),
    ("tempo.demo", ["ckpt_path=missing.ckpt"], "video is required"),
    ("tempo.prepare", ["dataset=sthv1", "paths.data_dir=nodata"], "the sthv1 videos folder"),
    ("tempo.profile", ["dataset.num_segments=0"], "dataset.num_segments must be an integer ≥ 1"),
])
def test_every_command_prints_a_user_error_without_traceback(module, args, message, tmp_path):
    res = _command(module, args, tmp_path)
    assert res.returncode == 2, res.stderr[-2000:]
    assert "Traceback" not in res.stderr and message in res.stderr
    log = res.stderr.strip().splitlines()[-1]
    assert log.startswith("(log: ") and log.endswith(".log)")
    full = _command(module, args, tmp_path, HYDRA_FULL_ERROR="1")
    assert full.returncode == 1 and "Traceback" in full.stderr and message in full.stderr


@pytest.mark.slow
def test_report_on_a_folder_without_jobs_exits_2(tmp_path):
    res = _command("tempo.report", [str(tmp_path)], tmp_path)
    assert res.returncode == 2 and "Traceback" not in res.stderr and "summary.json" in res.stderr


def test_loader_defaults_fit_the_machine(tmp_path, monkeypatch):
    """dataset=list asks for 8 workers and pinned memory; on a 2-CPU machine without GPU torch warned thrice."""
    import torch
    from hydra.utils import instantiate

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    cfg = compose_config(["dataset=list", "dataset.root=/videos", "dataset.annotations=/lists",
                          "dataset.num_classes=2"], tmp_path)
    assert cfg.dataset.num_workers == 8 and cfg.dataset.datamodule.pin_memory is None
    datamodule = instantiate(cfg.dataset.datamodule)
    assert datamodule.num_workers == 2 and datamodule.pin_memory == torch.cuda.is_available()
    pinned = instantiate(cfg.dataset.datamodule, num_workers=1, pin_memory=True)
    assert pinned.num_workers == 1 and pinned.pin_memory is True


def test_tensorboard_hp_metric_is_the_best_validation_score(tiny_cfg, one_thread):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from tempo.train import run

    summary = run(tiny_cfg("logger=tensorboard", "run_test=false"))
    values = []
    for events in sorted((Path(summary["run_dir"]) / "tensorboard").rglob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        if "hp_metric" in accumulator.Tags()["scalars"]:
            values += [e.value for e in accumulator.Scalars("hp_metric")]
    assert values and values[-1] == pytest.approx(summary["best"]["value"]) and values[-1] != -1
