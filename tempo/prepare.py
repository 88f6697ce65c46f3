"""`python -m tempo.prepare dataset=<name> root=<videos> annotations=<files> [options]`.

Reads the dataset's official annotations exactly as training does, then checks every video
(or frame folder) of every subset: it exists, opens, has at least one frame and (with
`decode_check`) its first and last usable frames decode. Results:

- the frame-count manifest training reuses (`${paths.cache_dir}/manifests`, copied to the run dir),
- with the `pyav` backend, the packet index of each video it decodes (`decode_check`) or converts
  (`dataset.packet_index_dir`, `tempo.data.packet_store`): training opens them without demuxing,
- `prepare_report.json` and `prepare_report.txt` in the run dir: ok / missing / broken counts per
  subset, with every missing and broken path (and the error), and the label check training makes
  (the class count is `dataset.num_classes`, every label in [0, K), the subsets training reads are
  labelled), with every out-of-range label's file and line,
- a summary table on the console. The exit status is 1 only with `strict=true` and a problem.

Options convert the ok videos to a new root (same relative paths, so the same annotations
read them): `resize_short_side=256` re-encodes with PyAV (`gop=` sets a short keyframe
interval for fast seeking); `format=fast` re-encodes (short side 256 unless set) into the
stored format benchmarks/bench_pipeline.py measured best at training quality
(`tempo.data.formats.FAST_FORMAT`; every format, measured: docs/datasets-formats.md);
`extract_frames=true` writes JPEG folders named after each video
file (read them with `dataset.root=<new root> dataset.backend=frames`). Checks run in threads,
conversions in `workers` processes.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tempo import CONF_DIR
from tempo.data.convert import Job, convert_one, default_output_root
from tempo.data.formats import FAST_FORMAT, FAST_SHORT_SIDE, FORMATS, describe
from tempo.data.manifest import FrameManifest
from tempo.data.paths import dataset_path_problem
from tempo.data.records import VideoRecord, label_findings
from tempo.data.video_checks import Check, check_all, run_parallel
from tempo.errors import ConfigError
from tempo.run.frontdoor import to_log_file, user_errors

log = logging.getLogger(__name__)
console = Console()

STATUSES = ("ok", "missing", "broken")
SHOWN = 10  # problem paths printed on the console (all are in the report files)

class PrepareError(ConfigError):
    """A configuration problem found before any checking starts."""


# -- annotations ---------------------------------------------------------------------------
def read_subsets(reader: Callable, subsets: Sequence[str]) -> tuple[dict[str, list[VideoRecord]],
                                                                      list[str], dict[str, str]]:
    """Records per subset, the class names, and the subsets whose annotations failed to read."""
    records, errors, class_names = {}, {}, []
    for subset in subsets:
        try:
            parsed = reader(subset=subset)
        except (OSError, ValueError) as err:  # missing or malformed annotation file
            errors[subset] = f"{type(err).__name__}: {err}"
            continue
        records[subset] = parsed.records
        class_names = class_names or list(parsed.class_names)
    return records, class_names, errors


# -- report ------------------------------------------------------------------------------
def build_report(name: str, root: str | None, annotations: str | None, records: dict[str, list[VideoRecord]],
                 checks: dict[str, Check], class_names: list[str], errors: dict[str, str]) -> dict:
    subsets = {}
    for subset, recs in records.items():
        found = [checks[r.path] for r in recs]
        subsets[subset] = {
            "videos": len(recs),
            "ok": sum(c.status == "ok" for c in found),
            "missing": [c.path for c in found if c.status == "missing"],
            "broken": [{"path": c.path, "error": c.error} for c in found if c.status == "broken"],
        }
    totals = {s: sum(c.status == s for c in checks.values()) for s in STATUSES}
    return {"dataset": name, "root": root, "annotations": annotations, "num_classes": len(class_names),
            "unique_videos": len(checks), "totals": totals, "subsets": subsets, "annotation_errors": errors}


def has_problems(report: dict) -> bool:
    return bool(report["totals"]["missing"] or report["totals"]["broken"] or report["annotation_errors"]
                or report["labels"]["problems"])


def report_text(report: dict) -> str:
    lines = [f"tempo.prepare report: dataset {report['dataset']}", f"root: {report['root']}",
             f"annotations: {report['annotations']}", f"classes: {report['num_classes']}", "",
             f"{'subset':<8} {'videos':>8} {'ok':>8} {'missing':>8} {'broken':>8}"]
    for subset, s in report["subsets"].items():
        lines.append(f"{subset:<8} {s['videos']:>8} {s['ok']:>8} {len(s['missing']):>8} {len(s['broken']):>8}")
    t = report["totals"]
    lines.append(f"{'unique':<8} {report['unique_videos']:>8} {t['ok']:>8} {t['missing']:>8} {t['broken']:>8}")
    for subset, error in report["annotation_errors"].items():
        lines += ["", f"{subset}: annotations could not be read: {error}"]
    labels = report["labels"]
    counts = ", ".join(f"{subset} {s['labelled']} labelled, {s['unlabelled']} unlabelled, "
                       f"{len(s['out_of_range'])} out of range" for subset, s in labels["subsets"].items())
    lines += ["", f"labels (dataset.num_classes={labels['num_classes']}): {counts}",
              *(f"  {p}" for p in labels["problems"])]
    for subset, s in report["subsets"].items():
        if s["missing"]:
            lines += ["", f"missing in {subset} ({len(s['missing'])}):", *(f"  {p}" for p in s["missing"])]
        if s["broken"]:
            lines += ["", f"broken in {subset} ({len(s['broken'])}):",
                      *(f"  {b['path']}\n    {b['error']}" for b in s["broken"])]
    return "\n".join(lines) + "\n"


def write_report(report: dict, run_dir: Path) -> tuple[Path, Path]:
    run_dir.mkdir(parents=True, exist_ok=True)
    json_path, text_path = run_dir / "prepare_report.json", run_dir / "prepare_report.txt"
    json_path.write_text(json.dumps(report, indent=1))
    text_path.write_text(report_text(report))
    return json_path, text_path


def print_summary(report: dict) -> None:
    table = Table(title=f"{report['dataset']}: {report['unique_videos']} videos checked")
    for column in ("subset", "videos", "ok", "missing", "broken"):
        table.add_column(column, justify="left" if column == "subset" else "right")
    for subset, s in report["subsets"].items():
        table.add_row(subset, str(s["videos"]), str(s["ok"]), str(len(s["missing"])), str(len(s["broken"])))
    console.print(table)
    for subset, error in report["annotation_errors"].items():
        console.print(f"[red]{subset}: annotations could not be read:[/red] {escape(error)}", soft_wrap=True)
    problems = report["labels"]["problems"]
    bad = sum(len(s["out_of_range"]) for s in report["labels"]["subsets"].values())
    console.print(f"labels: {len(problems)} problems ({bad} out of range)" if problems else "labels: ok",
                  style="red" if problems else None, highlight=False)
    for problem in problems[:SHOWN]:
        console.print(f"  {escape(problem)}", highlight=False, soft_wrap=True)  # paths stay whole, copyable
    shown = 0
    for subset, s in report["subsets"].items():
        problems = [(p, "missing") for p in s["missing"]] + [(b["path"], b["error"]) for b in s["broken"]]
        for path, what in problems[: max(SHOWN - shown, 0)]:
            brief = " ".join(str(what).split())[:160]
            console.print(f"  {subset}: {escape(path)}  [yellow]{escape(brief)}[/yellow]", highlight=False,
                          soft_wrap=True)
            shown += 1


# -- manifest ----------------------------------------------------------------------------------
def save_manifest(checks: Iterable[Check], root: str, cache_dir: str | None) -> FrameManifest:
    manifest = FrameManifest(root, cache_dir)
    for check in checks:
        if check.status == "ok" and check.num_frames:
            manifest.add(check.path, check.num_frames)
    manifest.save()
    return manifest


# -- conversion --------------------------------------------------------------------------------
def convert(cfg: DictConfig, checks: dict[str, Check], root: str, run_dir: Path) -> dict | None:
    """Run the requested conversion for the ok videos; returns its summary (None if none asked)."""
    short_side, frames = cfg.get("resize_short_side"), bool(cfg.get("extract_frames"))
    encoding = _stored_format(cfg)
    if encoding is not None:
        short_side = short_side or FAST_SHORT_SIDE
    if not short_side and not frames:
        return None
    if cfg.dataset.datamodule.get("backend") == "frames":
        raise PrepareError("resize_short_side / extract_frames convert videos, but this dataset already "
                           "reads frame folders; nothing to convert.")
    out_root = Path(cfg.output_root) if cfg.get("output_root") else default_output_root(root, short_side, frames)
    jobs = []
    for check in checks.values():
        rel = os.path.relpath(check.path, root)
        if check.status != "ok" or rel.startswith(".."):
            continue
        jobs.append(Job(check.path, str(out_root / rel), short_side, frames, encoding or cfg.get("gop"),
                        int(cfg.jpeg_quality), cfg.frame_template, int(cfg.start_index), bool(cfg.overwrite),
                        cfg.dataset.get("packet_index_dir")))
    for job in jobs:
        Path(job.dst).parent.mkdir(parents=True, exist_ok=True)
    what = "extracting frames of" if frames else f"re-encoding (short side {short_side})"
    if encoding is not None and not frames:
        console.print(f"format={cfg.format}: writing {describe(encoding)}, short side {short_side}",
                      highlight=False)
    results = run_parallel(convert_one, jobs, int(cfg.workers), f"{what} {len(jobs)} videos", processes=True)
    written = {dst: n for dst, n in results if isinstance(n, int)}
    failed = {dst: n for dst, n in results if not isinstance(n, int)}
    manifest = FrameManifest(out_root, _manifest_dir(cfg))
    for dst, n in written.items():
        manifest.add(dst, n)
    manifest.save()
    hint = f"dataset.root={out_root}" + (" dataset.backend=frames" if frames else "")
    console.print(f"converted {len(written)} videos into {escape(str(out_root))} ({len(failed)} failed); "
                  f"train with {escape(hint)}", highlight=False)
    if failed:
        (run_dir / "convert_failures.txt").write_text("".join(f"{p}\t{e}\n" for p, e in failed.items()))
    return {"output_root": str(out_root), "converted": len(written), "failed": failed, "use": hint,
            "manifest": str(manifest.path)}


def _stored_format(cfg: DictConfig) -> str | None:
    """The FORMATS name `format=` asks for (`fast` = FAST_FORMAT); None without `format`."""
    name = cfg.get("format")
    if name is None:
        return None
    name = FAST_FORMAT if name == "fast" else name
    if name not in FORMATS:
        raise PrepareError(f"format={cfg.format} is not a stored format; choose fast or one of {sorted(FORMATS)}")
    if cfg.get("gop") is not None:
        raise PrepareError("format= sets the keyframe interval itself; drop gop= (or drop format=)")
    return name


# -- entry point ---------------------------------------------------------------------------------
def _manifest_dir(cfg: DictConfig) -> str:
    return cfg.dataset.datamodule.get("manifest_dir") or str(Path(cfg.paths.cache_dir) / "manifests")


def check_paths(cfg: DictConfig) -> None:
    for key in ("root", "annotations"):
        if key not in cfg.dataset.datamodule.reader:  # e.g. the synthetic set needs neither
            continue
        problem = dataset_path_problem(cfg.dataset.name, key, cfg.dataset[key])
        if problem:  # tempo.prepare also takes the short spelling
            raise PrepareError(f"{problem}; here `{key}=/path` works too")


def apply_short_options(cfg: DictConfig) -> None:
    """`root=` / `annotations=` are short for `dataset.root=` / `dataset.annotations=`."""
    if "name" not in (cfg.get("dataset") or {}):
        raise PrepareError("choose the dataset to check: `dataset=<k400|sthv1|sthv2|ucf101|hmdb51|diving48|list>`")
    for key in ("root", "annotations"):
        if cfg.get(key) is not None:
            cfg.dataset[key] = cfg[key]


def run(cfg: DictConfig) -> dict:
    """Check (and optionally convert) the dataset `cfg` names; returns the report (also written)."""
    apply_short_options(cfg)
    check_paths(cfg)
    run_dir = Path(cfg.paths.output_dir)
    data = cfg.dataset.datamodule
    reader = instantiate(data.reader)
    records, class_names, errors = read_subsets(reader, list(cfg.subsets))
    everything = [r for recs in records.values() for r in recs]
    options = data.get("source_kwargs")
    source_kwargs = OmegaConf.to_container(options, resolve=True) if options else {}
    checks = check_all(everything, data.get("backend", "pyav"), source_kwargs, bool(cfg.decode_check),
                       int(cfg.workers))
    root = str(cfg.dataset.get("root") or _common_root(everything))
    report = build_report(cfg.dataset.name, root, cfg.dataset.get("annotations"), records, checks,
                          class_names, errors)
    trained = {"train", "val", str(data.get("test_subset", "test"))}
    report["labels"] = label_findings(records, class_names, cfg.dataset.get("num_classes"), sorted(trained))
    if checks:
        manifest = save_manifest(checks.values(), data.get("root") or root, _manifest_dir(cfg))
        run_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(manifest.path, run_dir / "manifest.json")
        report["manifest"] = str(manifest.path)
    report["conversion"] = convert(cfg, checks, root, run_dir)
    json_path, text_path = write_report(report, run_dir)
    to_log_file(report_text(report))
    print_summary(report)
    console.print(f"report: {escape(str(text_path))} (and {json_path.name})", highlight=False, soft_wrap=True)
    return report


def _common_root(records: Sequence[VideoRecord]) -> str:
    from tempo.data.datamodule import common_root

    return common_root(records) if records else "."


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="prepare")
@user_errors
def main(cfg: DictConfig) -> None:
    report = run(cfg)
    if has_problems(report):
        if cfg.strict:
            console.print("[red]strict=true: missing or broken data or wrong labels found; exiting with "
                          "status 1[/red]")
            sys.exit(1)
        console.print("[yellow]problems found (see the report); training fails on missing videos unless "
                      "dataset.allow_missing=true, skips broken ones, and fails on wrong labels[/yellow]")


if __name__ == "__main__":
    main()
