"""`python -m tempo.report <multirun dir>`: one table (and bar plot) of a sweep's jobs.

Reads every `<job>/summary.json` and `<job>/.hydra/overrides.yaml` under the folder (a job with
overrides but no summary yet is listed as `unfinished`, its metrics empty), prints
a table of the swept overrides with best validation and test accuracy, params/GMACs per clip,
wall time and, for multi-branch networks, each branch's top-1 (`test/top1_<branch>`,
`val/top1_<branch>`), and writes
`report.csv`, `report.md` and `report.png` beside the jobs.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table

METRICS = ("best", "test/top1", "test/top5", "test/mean_class", "wall_time_s", "params", "gmacs")
BRANCH_PREFIXES = ("test/top1_", "val/top1_")  # per-branch accuracy of multi-branch networks


def job_dirs(sweep_dir: Path) -> list[Path]:
    """The sweep's job folders: those with a summary, and those Hydra started (overrides) that have none."""
    found = {p.parent for p in sweep_dir.glob("*/summary.json")} | \
        {p.parent.parent for p in sweep_dir.glob("*/.hydra/overrides.yaml")}
    return sorted(found, key=lambda p: _job_key(p.name))


def job_rows(sweep_dir: Path) -> list[dict]:
    rows = []
    for job in job_dirs(sweep_dir):
        summary_path = job / "summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {"status": "unfinished"}
        overrides_file = job / ".hydra" / "overrides.yaml"
        overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.is_file() else []
        complexity = summary.get("complexity") or {}
        test, final = summary.get("test") or {}, summary.get("final") or {}
        branches = {k: v for k, v in {**final, **test}.items() if k.startswith(BRANCH_PREFIXES)}
        rows.append({
            "job": job.name,
            "status": summary.get("status", "completed"),  # diverged / preempted / unfinished jobs are marked
            "overrides": overrides,
            "best": (summary.get("best") or {}).get("value"),
            **{k: test.get(k) for k in METRICS[1:4]},
            "wall_time_s": summary.get("wall_time_s"),
            "params": complexity.get("params"),
            "gmacs": complexity.get("gmacs"),
            "branches": branches,
        })
    return rows


def branch_columns(rows: list[dict]) -> list[str]:
    """Per-branch metric names present in any job, test first."""
    names = {k for row in rows for k in row.get("branches", {})}
    return sorted(names, key=lambda k: (not k.startswith("test/"), k))


def _job_key(name: str):
    return (0, int(name)) if name.isdigit() else (1, name)


def swept_overrides(rows: list[dict]) -> list[dict[str, str]]:
    """Only the overrides that differ between jobs (the sweep's axes)."""
    parsed = [dict(o.split("=", 1) for o in row["overrides"] if "=" in o) for row in rows]
    keys = sorted({k for p in parsed for k in p})
    varying = [k for k in keys if len({p.get(k) for p in parsed}) > 1]
    return [{k: p.get(k, "") for k in varying} for p in parsed]


def write_outputs(sweep_dir: Path, rows: list[dict], axes: list[dict[str, str]]) -> None:
    columns = sorted({k for a in axes for k in a})
    branches = branch_columns(rows)
    with open(sweep_dir / "report.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["job", *columns, *METRICS, *branches, "status"])
        for row, axis in zip(rows, axes, strict=True):
            writer.writerow([row["job"], *(axis.get(c, "") for c in columns), *(row[m] for m in METRICS),
                             *(row["branches"].get(b) for b in branches), row["status"]])
    head = [*columns, "best val", "test top-1", "test top-5", "params (M)", "GMACs", "wall time", *branches]
    lines = ["| job | " + " | ".join(head) + " |", "|" + "---|" * (len(head) + 1)]
    for row, axis in zip(rows, axes, strict=True):
        cells = [*(axis.get(c, "") for c in columns), *_cells(row, branches)]
        lines.append(f"| {job_label(row)} | " + " | ".join(cells) + " |")
    (sweep_dir / "report.md").write_text("\n".join(lines) + "\n")
    _plot(sweep_dir / "report.png", rows, axes)


def job_label(row: dict) -> str:
    """The job's name, with its status when it did not complete ("3 (diverged)")."""
    return row["job"] if row["status"] == "completed" else f"{row['job']} ({row['status']})"


def _cells(row: dict, branches: list[str]) -> list[str]:
    """best, test top-1/5, params (M), GMACs, wall time, then the branches' accuracies, as printed."""
    params = "" if row["params"] is None else f"{row['params'] / 1e6:.2f}"
    gmacs = "" if row["gmacs"] is None else f"{row['gmacs']:.2f}"
    return [_pct(row["best"]), _pct(row["test/top1"]), _pct(row["test/top5"]), params, gmacs,
            _duration(row["wall_time_s"]), *(_pct(row["branches"].get(b)) for b in branches)]


def _duration(seconds) -> str:
    if seconds is None:
        return ""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _pct(value) -> str:
    return "" if value is None else f"{100 * value:.1f}"


def _plot(path: Path, rows: list[dict], axes: list[dict[str, str]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [", ".join(f"{k.split('.')[-1]}={v}" for k, v in a.items()) or r["job"]
              for r, a in zip(rows, axes, strict=True)]
    values = [100 * (r["best"] or 0) for r in rows]
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(rows) + 2), 4))
    ax.bar(range(len(rows)), values)
    ax.set_xticks(range(len(rows)), labels, rotation=30, ha="right", fontsize=8)
    ax.set(ylabel="best val top-1 (%)", title=path.parent.name)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="a multirun folder, e.g. outputs/multirun/<date>/<time>")
    args = parser.parse_args(argv)
    rows = job_rows(args.sweep_dir)
    if not rows:
        print(f"error: no job folders (*/summary.json or */.hydra/overrides.yaml) under {args.sweep_dir}: "
              "pass a multirun folder, e.g. outputs/multirun/<date>/<time>", file=sys.stderr)
        return 2  # the user's to fix, as the other commands' configuration errors
    axes = swept_overrides(rows)
    write_outputs(args.sweep_dir, rows, axes)
    columns = sorted({k for a in axes for k in a})
    branches = branch_columns(rows)
    table = Table(title=f"sweep {args.sweep_dir}")
    for c in ["job", *columns, "best val", "test top-1", "test top-5", "params (M)", "GMACs", "wall time",
              *branches]:
        table.add_column(c)
    for row, axis in zip(rows, axes, strict=True):
        table.add_row(job_label(row), *(axis.get(c, "") for c in columns), *_cells(row, branches))
    Console().print(table)
    print(f"written: {args.sweep_dir / 'report.csv'}, report.md, report.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
