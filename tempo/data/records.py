"""What one annotated video is, and the generic list-file reader."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tempo.errors import MissingDataError, UserError


class AnnotationError(UserError, ValueError):
    """An annotation file is malformed; the message names the file and line."""


@dataclass(frozen=True)
class VideoRecord:
    """One video (file or frame folder) with its label.

    `label` is -1 when unknown (test splits); `num_frames` is None until probed.
    `start`/`end` bound the usable frames (end exclusive) for datasets that annotate
    a segment of a longer video (Diving48). `origin` says where the annotation came from,
    `<file>:<1-based line>` (or the JSON entry), for error messages; it takes no part in equality.
    """

    path: str
    label: int = -1
    num_frames: int | None = None
    start: int = 0
    end: int | None = None
    origin: str | None = field(default=None, compare=False)

    def with_frames(self, num_frames: int) -> VideoRecord:
        return dataclasses.replace(self, num_frames=num_frames)

    @property
    def usable_frames(self) -> int | None:
        """Frames inside [start, end), or None when the count is not known yet."""
        if self.num_frames is None:
            return None if self.end is None else self.end - self.start
        end = self.num_frames if self.end is None else min(self.end, self.num_frames)
        return max(end - self.start, 0)


def out_of_range(records: list[VideoRecord], num_classes: int) -> list[VideoRecord]:
    """Records whose label is outside [0, num_classes) (-1 = unlabelled is not)."""
    return [r for r in records if r.label != -1 and not 0 <= r.label < num_classes]


def check_labels(records: list[VideoRecord], num_classes: int, source: str) -> None:
    """Fail early if any label is outside [0, num_classes) (-1 = unlabelled is fine).

    The error names the annotation file and 1-based line of the record (`VideoRecord.origin`); records
    without an origin are named by `source` and their position in the list.
    """
    bad = out_of_range(records, num_classes)
    if bad:
        rec = bad[0]
        where = rec.origin or f"{source}: record {records.index(rec)}"
        raise AnnotationError(
            f"{where} ({rec.path}) has label {rec.label}, outside [0, {num_classes})"
            + (f" ({len(bad)} such records)" if len(bad) > 1 else "")
            + ". Check `dataset.num_classes` or the annotation file."
        )


def label_findings(records: dict[str, list[VideoRecord]], class_names: list[str], num_classes: int | None,
                   trained_subsets: Sequence[str]) -> dict:
    """The label checks training makes (`VideoDataModule`), collected instead of raised (`tempo.prepare`):
    per subset the labelled, unlabelled and out-of-range counts, and the problems found (class count vs
    `dataset.num_classes`, labels outside [0, K), unlabelled videos in a subset training reads)."""
    problems = []
    if num_classes is not None and class_names and len(class_names) != num_classes:
        problems.append(f"the annotations define {len(class_names)} classes but `dataset.num_classes` is "
                        f"{num_classes}; set it to {len(class_names)}")
    subsets = {}
    for subset, recs in records.items():
        bad = out_of_range(recs, num_classes) if num_classes is not None else []
        unlabelled = sum(r.label == -1 for r in recs)
        subsets[subset] = {"labelled": len(recs) - unlabelled, "unlabelled": unlabelled,
                           "out_of_range": [{"where": r.origin, "path": r.path, "label": r.label} for r in bad]}
        problems += [f"{r.origin or subset}: {r.path} has label {r.label}, outside [0, {num_classes})"
                     for r in bad]
        if unlabelled and subset in trained_subsets:
            problems.append(f"{unlabelled} of {len(recs)} {subset} videos have no label, and training reads "
                            f"{subset} (for the test stage: `dataset.test_subset`)")
    return {"num_classes": num_classes, "subsets": subsets, "problems": problems}


def read_list(
    list_file: str | Path,
    root: str | Path = "",
    kind: str = "video",
) -> list[VideoRecord]:
    """Read a generic MMAction2/TSM-style list.

    kind="video":  `<relpath> <label>` per line.
    kind="frames": `<frame_dir> <num_frames> <label>` per line.
    Paths may contain spaces: the label fields are taken from the right.
    """
    list_file = Path(list_file)
    if not list_file.is_file():
        raise MissingDataError(f"annotation list {list_file} does not exist; check `dataset.annotations`.")
    n_numeric = {"video": 1, "frames": 2}[kind]
    expected = "<path> <label>" if kind == "video" else "<frame_dir> <num_frames> <label>"
    records = []
    for lineno, line in enumerate(list_file.read_text().splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split()
        numeric_tail = 0
        for f in reversed(fields):
            if not f.lstrip("-").isdigit():
                break
            numeric_tail += 1
        if len(fields) < n_numeric + 1 or numeric_tail < n_numeric:
            raise AnnotationError(
                f"{list_file}:{lineno}: expected '{expected}', got {line!r}. "
                f"Fix the line or set `dataset.list_kind` to the list's format."
            )
        if numeric_tail > n_numeric and len(fields) - numeric_tail >= 1 and kind == "video":
            raise AnnotationError(
                f"{list_file}:{lineno}: several labels on one line ({line!r}); multi-label "
                "lists are not supported."
            )
        path_part = line.rsplit(None, n_numeric)[0].strip()
        nums = [int(f) for f in fields[-n_numeric:]]
        if nums[-1] < 0:  # official test sets may be unlabelled; a list has no such label
            raise AnnotationError(
                f"{list_file}:{lineno}: label {nums[-1]} for {path_part}; a list's labels are class "
                "indices 0 … K-1: give the video its class or remove the line."
            )
        path = str(Path(root) / path_part) if root else path_part
        origin = f"{list_file}:{lineno}"
        if kind == "video":
            records.append(VideoRecord(path=path, label=nums[0], origin=origin))
        else:
            records.append(VideoRecord(path=path, label=nums[1], num_frames=nums[0], origin=origin))
    if not records:
        raise AnnotationError(f"{list_file}: no records found (empty list?).")
    return records


@dataclass
class ParsedSplit:
    """What a dataset reader returns for one subset: records and ordered class names."""

    records: list[VideoRecord]
    class_names: list[str]
