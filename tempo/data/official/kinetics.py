"""Kinetics-400 from the official CSVs (`train.csv`, `validate.csv`, `test.csv`).

Header `label,youtube_id,time_start,time_end,split[,is_cc]`; the test CSV may have no
`label` column (records get label -1). Class index = rank of the name in the sorted set
of TRAIN-CSV names, so parsing val/test also reads the train CSV. Clips live at
`<root>/<split_dir>/<class folder>/<youtube_id>_<start:06d>_<end:06d><ext>` (layout
"class_folders"; unlabelled test clips have no class folder) or directly in
`<root>/<split_dir>/` (layout "flat"). Subsets: train, val (= validate.csv), test.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tempo.data.official._common import (
    annotation_folders,
    check_subset,
    ensure_records,
    find_file,
    line_error,
    line_origin,
    parse_int,
)
from tempo.data.records import AnnotationError, ParsedSplit, VideoRecord
from tempo.errors import ConfigError

DATASET = "kinetics400"
DEFAULT_CSV_NAMES: dict[str, tuple[str, ...]] = {
    "train": ("train.csv", "kinetics_train.csv"),
    "val": ("validate.csv", "kinetics_val.csv"),
    "test": ("test.csv", "kinetics_test.csv"),
}
DEFAULT_SPLIT_DIRS = {"train": "train", "val": "val", "test": "test"}
LAYOUTS = ("class_folders", "flat")
REQUIRED_COLUMNS = ("youtube_id", "time_start", "time_end")
EXPECTED_HEADER = "label,youtube_id,time_start,time_end,split[,is_cc]"


@dataclass(frozen=True)
class KineticsRow:
    label_name: str | None  # None: no label (test CSV)
    youtube_id: str
    start: int
    end: int
    lineno: int


def class_folder_name(label_name: str) -> str:
    """Folder of a class as the usual download scripts create it: spaces → `_`, quotes removed."""
    return label_name.replace(" ", "_").replace('"', "").replace("'", "")


def clip_file_name(youtube_id: str, start: int, end: int, ext: str = ".mp4") -> str:
    return f"{youtube_id}_{start:06d}_{end:06d}{ext}"


def read_kinetics_csv(path: Path, need_label: bool) -> list[KineticsRow]:
    """Rows of one official CSV; `need_label` makes a missing/empty label an error."""
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise AnnotationError(f"{path}: empty file; expected a header '{EXPECTED_HEADER}'.")
        columns = [c.strip().lower() for c in header]
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        if need_label and "label" not in columns:
            missing.insert(0, "label")
        if missing:
            raise AnnotationError(
                f"{path}:1: header lacks column(s) {missing}; expected '{EXPECTED_HEADER}' "
                f"(label optional only in the test CSV). Got {header!r}."
            )
        col = {name: i for i, name in enumerate(columns)}
        rows = []
        for row in reader:
            if not any(field.strip() for field in row):
                continue
            rows.append(_parse_row(row, col, len(columns), path, reader.line_num, need_label))
    return rows


def _parse_row(
    row: list[str], col: dict[str, int], width: int, path: Path, lineno: int, need_label: bool
) -> KineticsRow:
    line = ",".join(row)
    if len(row) != width:
        few = "too few" if len(row) < width else "too many"
        raise line_error(
            path, lineno, f"{few} fields ({len(row)}, the header has {width}: '{EXPECTED_HEADER}')", line
        )
    label = row[col["label"]].strip() if "label" in col else ""
    if need_label and not label:
        raise line_error(path, lineno, "empty label", line)
    youtube_id = row[col["youtube_id"]].strip()
    if not youtube_id:
        raise line_error(path, lineno, "empty youtube_id", line)
    start = parse_int(row[col["time_start"]].strip(), path, lineno, "time_start", line)
    end = parse_int(row[col["time_end"]].strip(), path, lineno, "time_end", line)
    return KineticsRow(label or None, youtube_id, start, end, lineno)


def _csv_names(subset: str, csv_names: Mapping[str, str | Sequence[str]] | None) -> tuple[str, ...]:
    if csv_names is None or subset not in csv_names:
        return DEFAULT_CSV_NAMES[subset]
    names = csv_names[subset]
    return (names,) if isinstance(names, str) else tuple(names)


def parse_kinetics400(
    annotations: str | Path,
    root: str | Path,
    subset: str,
    *,
    csv_names: Mapping[str, str | Sequence[str]] | None = None,
    layout: str = "class_folders",
    split_dir: str | None = None,
    ext: str = ".mp4",
) -> ParsedSplit:
    """Records of one Kinetics-400 subset.

    csv_names: per subset a file name (or candidates) inside `annotations`; default
        accepts both `train.csv`/`validate.csv`/`test.csv` and `kinetics_{train,val,test}.csv`.
    layout: "class_folders" (`<split_dir>/<class>/<clip>`) or "flat" (`<split_dir>/<clip>`).
    split_dir: folder under `root` for this subset (default train/val/test; "" = root itself).
    """
    check_subset(subset, DATASET)
    if layout not in LAYOUTS:
        raise ConfigError(f"{DATASET}: layout must be one of {LAYOUTS}, got {layout!r}.")
    folders = annotation_folders(annotations, DATASET)
    train_csv = find_file(folders, _csv_names("train", csv_names), DATASET, "train CSV (for the class list)")
    train_rows = read_kinetics_csv(train_csv, need_label=True)
    class_names = sorted({r.label_name for r in train_rows if r.label_name})
    if subset == "train":
        path, rows = train_csv, train_rows
    else:
        path = find_file(folders, _csv_names(subset, csv_names), DATASET, f"{subset} CSV")
        rows = read_kinetics_csv(path, need_label=subset != "test")
    index = {name: i for i, name in enumerate(class_names)}
    base = Path(root) / (DEFAULT_SPLIT_DIRS[subset] if split_dir is None else split_dir)
    records = [_record(r, index, base, layout, ext, path) for r in rows]
    ensure_records(records, path)
    return ParsedSplit(records=records, class_names=class_names)


def _record(
    row: KineticsRow, index: dict[str, int], base: Path, layout: str, ext: str, path: Path
) -> VideoRecord:
    label = -1
    if row.label_name is not None:
        if row.label_name not in index:
            raise line_error(
                path, row.lineno, f"unknown class name {row.label_name!r} (not in the train CSV)"
            )
        label = index[row.label_name]
    name = clip_file_name(row.youtube_id, row.start, row.end, ext)
    if layout == "class_folders" and row.label_name is not None:
        video = base / class_folder_name(row.label_name) / name
    else:
        video = base / name
    return VideoRecord(path=str(video), label=label, origin=line_origin(path, row.lineno))
