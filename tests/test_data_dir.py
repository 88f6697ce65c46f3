"""The headline command as typed: datasets in the README's layout under TEMPO_DATA_DIR, no paths given."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.official_fixtures import NUM_CLASSES, make_kinetics400, make_sthv1, make_ucf101, sizes
from tests.official_fixtures import TINY_RUN as TINY

REPO = Path(__file__).resolve().parents[1]

# README "Datasets": <data dir>/<videos folder> and <data dir>/<annotations folder>
LAYOUT = {
    "sthv1": ("sthv1/20bn-something-something-v1", "sthv1/annotations", lambda d: make_sthv1(d, num_classes=5)),
    "ucf101": ("ucf101/UCF-101", "ucf101/ucfTrainTestlist", make_ucf101),
    "k400": ("kinetics400", "kinetics400/annotations", make_kinetics400),
}


def lay_out(data_dir: Path, name: str, scratch: Path) -> None:
    """Make the official-format fixture, then move it where the README says it lives."""
    videos, annotations, make = LAYOUT[name]
    root, ann = make(scratch / name)
    shutil.move(str(ann), str(scratch / f"{name}-annotations"))  # k400's annotations go inside its root
    (data_dir / videos).parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(root), str(data_dir / videos))
    shutil.move(str(scratch / f"{name}-annotations"), str(data_dir / annotations))


@pytest.mark.slow
@pytest.mark.parametrize("name", list(LAYOUT))
def test_headline_command_runs_as_typed(name, tmp_path):
    data_dir = tmp_path / "data"
    lay_out(data_dir, name, tmp_path / "scratch")
    run_dir = tmp_path / "run"
    env = {**os.environ, "TEMPO_DATA_DIR": str(data_dir), "WANDB_MODE": "offline", "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "tempo.train", "model=tcm", f"dataset={name}",
               # tiny overrides only: size, steps, the fixtures' class count — no dataset.root/annotations
               *TINY, *sizes(name), f"dataset.num_classes={NUM_CLASSES[name]}", "model.network.patch_size=3",
               f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={run_dir}", "print_config=false"]
    assert not any(a.startswith(("dataset.root", "dataset.annotations")) for a in command)
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["dataset"] == name and summary["global_step"] == 2 and "test/top1" in summary["test"]
    resolved = (run_dir / "config_resolved.yaml").read_text()
    assert f"root: {data_dir / LAYOUT[name][0]}" in resolved


@pytest.mark.slow
def test_relative_default_data_dir_is_the_working_directory(tmp_path):
    """Without TEMPO_DATA_DIR the data dir is `data/` where the command runs; the error says so."""
    env = {k: v for k, v in os.environ.items() if k != "TEMPO_DATA_DIR"}
    env.update(WANDB_MODE="offline", PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, "-m", "tempo.train", "model=tcm", "dataset=sthv1",
                             f"hydra.run.dir={tmp_path / 'run'}", "print_config=false"],
                            cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode != 0
    expected = tmp_path.resolve() / "data" / "sthv1" / "20bn-something-something-v1"
    assert f"{expected} does not exist" in result.stderr + result.stdout
