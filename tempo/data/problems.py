"""Data problems found while setting up: missing videos (the `allow_missing` policy), unlabelled subsets,
videos that fail to decode (listed in `<run dir>/broken_<subset>.txt`). Reported by the first DDP process."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from tempo.data.records import AnnotationError, VideoRecord
from tempo.errors import MissingDataError

log = logging.getLogger(__name__)


class MissingVideosError(MissingDataError):
    pass


def find_missing(records: Sequence[VideoRecord]) -> list[VideoRecord]:
    """Records whose file or frame folder does not exist (one stat each)."""
    return [r for r in records if not os.path.exists(r.path)]


def apply_missing_policy(records: list[VideoRecord], subset: str, allow_missing: bool,
                         report_dir: str | Path | None) -> list[VideoRecord]:
    missing = find_missing(records)
    if not missing:
        return records
    first = "\n  ".join(r.path for r in missing[:5])
    if not allow_missing:
        raise MissingVideosError(
            f"{len(missing)} of {len(records)} {subset} videos are missing, e.g.:\n  {first}\n"
            "Fix: check `dataset.root` (and the layout options), or run "
            "`python -m tempo.prepare dataset=<name> root=<videos> annotations=<files>` for a report; "
            "to train without them set `dataset.allow_missing=true` (the dropped list is written "
            "to the run directory)."
        )
    if _reporting_process():
        report = Path(report_dir or ".") / f"missing_{subset}.txt"
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text("".join(r.path + "\n" for r in missing))
        log.warning("dropped %d missing %s videos (allow_missing=true); list written to %s",
                    len(missing), subset, report)
    kept = set(map(id, missing))
    return [r for r in records if id(r) not in kept]


def _reporting_process() -> bool:
    """Every DDP process finds the same missing and broken videos; the first one reports them."""
    from lightning.pytorch.utilities import rank_zero_only

    return rank_zero_only.rank == 0


def check_labelled(records: Sequence[VideoRecord], subset: str) -> None:
    """Training and evaluation need labels: reject unlabelled (-1) records with the fix."""
    unlabelled = [r for r in records if r.label < 0]
    if unlabelled:
        raise AnnotationError(
            f"{len(unlabelled)} of {len(records)} videos of the {subset} annotations have no label "
            f"(e.g. {unlabelled[0].path}). The official test sets of Kinetics and Something-Something "
            "are unlabelled: evaluate on the validation set with `dataset.test_subset=val`."
        )


def report_broken(failures: dict[str, str], subset: str, report_dir: str | Path | None) -> Path | None:
    """Log videos whose frames could not be counted and write the full list (path, error)."""
    report = None
    if not _reporting_process():
        return None
    if report_dir is not None:
        report = Path(report_dir) / f"broken_{subset}.txt"
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text("".join(f"{path}\t{error}\n" for path, error in sorted(failures.items())))
    first = "\n  ".join(f"{p}: {e}" for p, e in list(failures.items())[:5])
    log.warning(
        "%d %s videos cannot be read (%s), e.g.:\n  %s\nThey are kept: replaced by other samples in "
        "training, excluded from (and counted beside) the accuracy in evaluation. Run "
        "`python -m tempo.prepare` for a full report.",
        len(failures), subset, f"list written to {report}" if report else "no run directory", first,
    )
    return report
