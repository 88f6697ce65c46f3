"""`python -m tempo.report`: params/GMACs, wall time and per-branch metrics per job of a sweep folder."""

import csv
import json
from pathlib import Path

from tempo.report import main as report


def write_job(sweep: Path, job: str, overrides: list[str], summary: dict) -> None:
    (sweep / job / ".hydra").mkdir(parents=True)
    (sweep / job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (sweep / job / "summary.json").write_text(json.dumps(summary))


def test_report_has_complexity_wall_time_and_branches(tmp_path, capsys):
    write_job(tmp_path, "0", ["model=tcnn_sparse", "model.network.branches=OD"], {
        "best": {"value": 0.5}, "wall_time_s": 3725.0, "complexity": {"params": 2_500_000, "gmacs": 1.25},
        "test": {"test/top1": 0.6, "test/top5": 0.9, "test/mean_class": 0.55, "test/top1_original": 0.4,
                 "test/top1_discriminative": 0.45},
        "final": {"val/top1": 0.5, "val/top1_original": 0.35}})
    write_job(tmp_path, "1", ["model=tcnn_sparse", "model.network.branches=O"], {  # an older summary: no complexity
        "best": {"value": 0.25}, "wall_time_s": 65.0, "test": {"test/top1": 0.3, "test/top1_original": 0.3}})
    assert report([str(tmp_path)]) == 0
    with (tmp_path / "report.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[:2] == ["job", "model.network.branches"]
    assert rows[0]["params"] == "2500000" and rows[0]["gmacs"] == "1.25" and rows[0]["wall_time_s"] == "3725.0"
    assert rows[0]["test/top1_original"] == "0.4" and rows[0]["test/top1_discriminative"] == "0.45"
    assert rows[0]["val/top1_original"] == "0.35"
    assert rows[1]["params"] == "" and rows[1]["test/top1_discriminative"] == ""
    assert rows[1]["test/top1_original"] == "0.3"
    markdown = (tmp_path / "report.md").read_text().splitlines()
    assert "params (M)" in markdown[0] and "test/top1_discriminative" in markdown[0]
    assert "| 0 | OD | 50.0 | 60.0 | 90.0 | 2.50 | 1.25 | 1h02m | 45.0 | 40.0 | 35.0 |" in markdown
    assert "| 1 | O | 25.0 | 30.0 |  |  |  | 1m05s |  | 30.0 |  |" in markdown
    assert "1h02m" in capsys.readouterr().out


def test_unfinished_job_is_listed_as_unfinished(tmp_path, capsys):
    write_job(tmp_path, "0", ["optimizer.lr=0.1"], {"status": "completed", "best": {"value": 0.5}})
    (tmp_path / "1" / ".hydra").mkdir(parents=True)  # started by Hydra, no summary yet (killed or running)
    (tmp_path / "1" / ".hydra" / "overrides.yaml").write_text("- optimizer.lr=0.01\n")
    assert report([str(tmp_path)]) == 0
    with (tmp_path / "report.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["job"], r["optimizer.lr"], r["status"], r["best"]) for r in rows] == [
        ("0", "0.1", "completed", "0.5"), ("1", "0.01", "unfinished", "")]
    assert "| 1 (unfinished) | 0.01 |  |  |  |  |  |  |" in (tmp_path / "report.md").read_text()
    assert "unfinished" in capsys.readouterr().out


def test_folder_without_jobs_is_a_user_error(tmp_path, capsys):
    assert report([str(tmp_path)]) == 2
    assert "no job folders" in capsys.readouterr().err
