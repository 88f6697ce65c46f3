"""Issue 22 through the command line: a run killed with `kill -9`, one pre-empted with SIGTERM and
requeued as SLURM does, end like the straight run; a sweep with a diverging job finishes the other."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tempo.report import job_rows
from tempo.run.resume import PREEMPTED_EXIT
from tests.conftest import REPO, TINY, train_cli
from tests.test_reproducibility import CHECKPOINT_EVERY_STEP, REPRO, assert_same_run

pytestmark = pytest.mark.slow


def cli_args(run_dir: Path, cache: Path, *overrides: str) -> list[str]:
    return [*TINY, *REPRO, f"paths.cache_dir={cache}", f"hydra.run.dir={run_dir}", *overrides]


def summary_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


@pytest.fixture(scope="module")
def straight(tmp_path_factory, synthetic_cache) -> dict:
    run_dir = tmp_path_factory.mktemp("straight") / "run"
    res = train_cli(cli_args(run_dir, synthetic_cache, *CHECKPOINT_EVERY_STEP))
    assert res.returncode == 0, res.stderr[-3000:]
    return summary_of(run_dir)


def start(args: list[str], **env: str) -> subprocess.Popen:
    environment = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1", **env}
    return subprocess.Popen([sys.executable, "-m", "tempo.train", *args], cwd=REPO, env=environment,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(path_glob: Path, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not list(path_glob.parent.glob(path_glob.name)):
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.time() < deadline, f"no {path_glob} after {timeout} s"
        time.sleep(0.1)


def test_killed_run_resumed_from_last_ckpt_ends_like_the_straight_run(tmp_path, synthetic_cache, straight):
    run_dir = tmp_path / "killed"
    process = start(cli_args(run_dir, synthetic_cache, *CHECKPOINT_EVERY_STEP))
    wait_for(run_dir / "checkpoints" / "step007.ckpt", process)  # 2⅓ epochs in
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert process.returncode == -signal.SIGKILL and not (run_dir / "summary.json").exists()
    res = train_cli(cli_args(tmp_path / "resume", synthetic_cache, *CHECKPOINT_EVERY_STEP,
                             f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}"))
    assert res.returncode == 0, res.stderr[-3000:]
    resumed = summary_of(run_dir)  # continued in the killed run's folder
    assert resumed["resumed_from"].endswith("last.ckpt")
    assert_same_run(straight, resumed)


def test_sigterm_saves_the_step_and_a_requeued_job_resumes_by_itself(tmp_path, synthetic_cache, straight):
    sweep = tmp_path / "sweep"
    run_dir = sweep / "0"
    args = cli_args(run_dir, synthetic_cache)
    process = start(args)
    wait_for(run_dir / "checkpoints" / "*.ckpt", process)  # epoch 1 is done
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == PREEMPTED_EXIT, stderr[-3000:]
    preempted = summary_of(run_dir)
    assert preempted["status"] == "preempted" and preempted["failure"]["signal"] == "SIGTERM"
    step = preempted["failure"]["step"]
    assert 3 < step < 12 and preempted["global_step"] == step  # stopped within the run, at a step's end
    assert preempted["checkpoints"]["last"] == str(run_dir / "checkpoints" / "last.ckpt")
    assert preempted["test"] == {}
    # SLURM requeues the job: the same command in the same folder, with SLURM_RESTART_COUNT set
    requeued = start(args, SLURM_RESTART_COUNT="1")
    _, stderr = requeued.communicate(timeout=600)
    assert requeued.returncode == 0, stderr[-3000:]
    resumed = summary_of(run_dir)
    assert resumed["status"] == "completed" and resumed["resumed_from"] == preempted["checkpoints"]["last"]
    assert_same_run(straight, resumed)
    assert [row["job"] for row in job_rows(sweep)] == ["0"]  # one job in the report, not two


def test_a_diverging_job_does_not_stop_the_sweep(tmp_path, synthetic_cache):
    sweep = tmp_path / "sweep"
    res = train_cli(["-m", *TINY, "run_test=false", f"paths.cache_dir={synthetic_cache}",
                     f"hydra.sweep.dir={sweep}", "optimizer.lr=0.01,1e30"])
    assert res.returncode == 1, res.stderr[-3000:]
    assert "1 sweep job(s) did not complete" in res.stderr and "1: diverged" in res.stderr
    assert summary_of(sweep / "0")["status"] == "completed" and summary_of(sweep / "1")["status"] == "diverged"
    report = subprocess.run([sys.executable, "-m", "tempo.report", str(sweep)], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    assert report.returncode == 0, report.stderr[-3000:]
    table = (sweep / "report.md").read_text()
    assert "| 1 (diverged) |" in table and "| 0 |" in table
    with (sweep / "report.csv").open() as f:
        assert [row["status"] for row in csv.DictReader(f)] == ["completed", "diverged"]
