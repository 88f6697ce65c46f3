"""Something-Something V1 (`;`-separated CSVs, JPEG frame folders) and V2 (JSON, webm).

V1: `something-something-v1-labels.csv` holds one class name per line; the class index is
the line order (`label_order="file"`, default) or the alphabetical rank (`"sorted"`, as in
TSM-style lists). Train/validation lines are `<id>;<class name>`, test lines `<id>`.
Records are frame folders `<root>/<id>` (num_frames left None: count them with a manifest).

V2: `something-something-v2-labels.json` maps template (no brackets) → index string;
train/validation JSON entries carry a bracketed `template`; test entries only an `id`.
Records are `<root>/<id><ext>`.

Both have a real (unlabelled) test set: subset "test" reads the test file (labels -1).
"""

from __future__ import annotations

from pathlib import Path

from tempo.data.official._common import (
    annotation_folders,
    check_subset,
    ensure_records,
    entry_error,
    entry_origin,
    find_file,
    get_key,
    line_error,
    line_origin,
    load_json,
    load_json_list,
    read_lines,
)
from tempo.data.records import AnnotationError, ParsedSplit, VideoRecord
from tempo.errors import ConfigError

V1 = "sthv1"
V2 = "sthv2"
V1_FILES = {
    "train": "something-something-v1-train.csv",
    "val": "something-something-v1-validation.csv",
    "test": "something-something-v1-test.csv",
}
V1_LABELS = "something-something-v1-labels.csv"
V2_FILES = {
    "train": "something-something-v2-train.json",
    "val": "something-something-v2-validation.json",
    "test": "something-something-v2-test.json",
}
V2_LABELS = "something-something-v2-labels.json"
LABEL_ORDERS = ("file", "sorted")


# -- V1 ------------------------------------------------------------------------------
def read_v1_labels(path: Path, label_order: str = "file") -> list[str]:
    names: list[str] = []
    seen: dict[str, int] = {}
    for lineno, line in read_lines(path):
        if ";" in line:
            raise line_error(path, lineno, "expected one class name per line (no ';')", line)
        if line in seen:
            raise line_error(path, lineno, f"duplicate class name (first on line {seen[line]})", line)
        seen[line] = lineno
        names.append(line)
    if not names:
        raise AnnotationError(f"{path}: no class names found (empty file?).")
    return sorted(names) if label_order == "sorted" else names


def parse_sthv1(
    annotations: str | Path,
    root: str | Path,
    subset: str,
    *,
    label_order: str = "file",
    frame_template: str = "{:05d}.jpg",
    start_index: int = 1,
) -> ParsedSplit:
    """Records (frame folders) of one Something-Something V1 subset.

    `frame_template`/`start_index` describe the JPEG names inside each folder
    (`00001.jpg` …); they are validated here and belong in the loader's source options.
    """
    check_subset(subset, V1)
    if label_order not in LABEL_ORDERS:
        raise ConfigError(f"{V1}: label_order must be one of {LABEL_ORDERS}, got {label_order!r}.")
    _check_template(frame_template, start_index)
    folders = annotation_folders(annotations, V1)
    class_names = read_v1_labels(find_file(folders, [V1_LABELS], V1, "labels file"), label_order)
    index = {name: i for i, name in enumerate(class_names)}
    path = find_file(folders, [V1_FILES[subset]], V1, f"{subset} list")
    records = []
    for lineno, line in read_lines(path):
        fields = [f.strip() for f in line.split(";")]
        records.append(_v1_record(fields, line, lineno, path, subset, index, Path(root)))
    ensure_records(records, path)
    return ParsedSplit(records=records, class_names=class_names)


def _v1_record(
    fields: list[str], line: str, lineno: int, path: Path, subset: str, index: dict[str, int], root: Path
) -> VideoRecord:
    expected = "'<id>'" if subset == "test" else "'<id>;<class name>'"
    if len(fields) > 2:
        raise line_error(
            path,
            lineno,
            f"too many ';' fields: expected {expected} (multi-label lines are not supported)",
            line,
        )
    if not fields[0]:
        raise line_error(path, lineno, f"empty video id: expected {expected}", line)
    if len(fields) < 2:
        if subset != "test":
            raise line_error(path, lineno, f"too few fields: expected {expected}", line)
        return VideoRecord(path=str(root / fields[0]), label=-1, origin=line_origin(path, lineno))
    if fields[1] not in index:
        raise line_error(path, lineno, f"unknown class name {fields[1]!r} (not in {V1_LABELS})", line)
    return VideoRecord(path=str(root / fields[0]), label=index[fields[1]], origin=line_origin(path, lineno))


def _check_template(template: str, start_index: int) -> None:
    try:
        a, b = template.format(start_index), template.format(start_index + 1)
    except (IndexError, KeyError, ValueError) as err:
        raise ConfigError(
            f"{V1}: frame_template {template!r} is not a format string for one int "
            f"(e.g. '{{:05d}}.jpg'): {err}"
        ) from err
    if a == b:
        raise ConfigError(f"{V1}: frame_template {template!r} does not use the frame number.")
    if start_index not in (0, 1):
        raise ConfigError(f"{V1}: start_index must be 0 or 1, got {start_index!r}.")


# -- V2 ------------------------------------------------------------------------------
def read_v2_labels(path: Path) -> list[str]:
    """Class names ordered by their index in the labels JSON (checked to be 0..N-1)."""
    data = load_json(path)
    if not isinstance(data, dict) or not data:
        raise AnnotationError(f"{path}: expected a JSON object mapping template → index string.")
    by_index: dict[int, str] = {}
    for name, value in data.items():
        try:
            idx = int(value)
        except (TypeError, ValueError):
            raise AnnotationError(f"{path}: template {name!r} has index {value!r}, not an integer.") from None
        if idx in by_index:
            raise AnnotationError(f"{path}: index {idx} is used by both {by_index[idx]!r} and {name!r}.")
        by_index[idx] = name
    if sorted(by_index) != list(range(len(by_index))):
        gaps = sorted(set(range(len(by_index))) ^ set(by_index))[:5]
        raise AnnotationError(
            f"{path}: indices must be 0..{len(by_index) - 1} without gaps; problem at {gaps}."
        )
    return [by_index[i] for i in range(len(by_index))]


def strip_brackets(template: str) -> str:
    """'Holding [something] next to [something]' → 'Holding something next to something'."""
    return template.replace("[", "").replace("]", "")


def parse_sthv2(annotations: str | Path, root: str | Path, subset: str, *, ext: str = ".webm") -> ParsedSplit:
    """Records (`<root>/<id><ext>`) of one Something-Something V2 subset."""
    check_subset(subset, V2)
    folders = annotation_folders(annotations, V2)
    class_names = read_v2_labels(find_file(folders, [V2_LABELS], V2, "labels JSON"))
    index = {name: i for i, name in enumerate(class_names)}
    path = find_file(folders, [V2_FILES[subset]], V2, f"{subset} JSON")
    records = []
    for i, entry in enumerate(load_json_list(path)):
        video_id = get_key(entry, "id", path, i, (str, int))
        label = -1
        if subset != "test" or "template" in entry:
            template = get_key(entry, "template", path, i, str)
            name = strip_brackets(template)
            if name not in index:
                raise entry_error(
                    path, i, f"unknown class: template {template!r} → {name!r} is not in {V2_LABELS}"
                )
            label = index[name]
        records.append(VideoRecord(path=str(Path(root) / f"{video_id}{ext}"), label=label,
                                   origin=entry_origin(path, i)))
    ensure_records(records, path)
    return ParsedSplit(records=records, class_names=class_names)
