"""Diving48 from the official V2 annotations.

`Diving48_vocab.json`: a list of `[take-off, somersaults, twists, flight]`; class name =
the four joined with spaces, class index = position in the list. `Diving48_V2_train.json`
/ `Diving48_V2_test.json`: lists of `{"vid_name", "label", "start_frame", "end_frame"}`;
videos are `<root>/<vid_name><ext>`. There is no separate validation set: "val" and
"test" both read the official test JSON.

Frame range: `VideoRecord.start = start_frame`, `VideoRecord.end = end_frame`, i.e.
`end_frame` is taken as EXCLUSIVE. In the released (already trimmed) clips start_frame is 0
and end_frame is the clip's frame count (TSM-style converters use it as num_frames), so
this reads the whole clip; `VideoRecord.usable_frames` clamps `end` to the probed frame
count, so an off-by-one can never index past the video.
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
    load_json_list,
)
from tempo.data.records import AnnotationError, ParsedSplit, VideoRecord

DATASET = "diving48"
VOCAB = "Diving48_vocab.json"
FILES = {"train": "Diving48_V2_train.json", "val": "Diving48_V2_test.json", "test": "Diving48_V2_test.json"}


def read_vocab(path: Path) -> list[str]:
    names = []
    for i, entry in enumerate(load_json_list(path)):
        if not isinstance(entry, list) or not entry or not all(isinstance(p, str) for p in entry):
            raise entry_error(
                path, i, "expected a list of strings like ['Back', '15som', '05Twis', 'FREE']", entry
            )
        names.append(" ".join(entry))
    if not names:
        raise AnnotationError(f"{path}: empty vocabulary.")
    return names


def parse_diving48(
    annotations: str | Path, root: str | Path, subset: str, *, ext: str = ".mp4"
) -> ParsedSplit:
    """Records (`<root>/<vid_name><ext>`, with start/end frames) of one Diving48 subset."""
    check_subset(subset, DATASET)
    folders = annotation_folders(annotations, DATASET)
    class_names = read_vocab(find_file(folders, [VOCAB], DATASET, "vocabulary"))
    path = find_file(folders, [FILES[subset]], DATASET, f"{subset} JSON")
    records = [
        _record(entry, i, path, len(class_names), Path(root), ext)
        for i, entry in enumerate(load_json_list(path))
    ]
    ensure_records(records, path)
    return ParsedSplit(records=records, class_names=class_names)


def _record(entry: object, i: int, path: Path, num_classes: int, root: Path, ext: str) -> VideoRecord:
    name = get_key(entry, "vid_name", path, i, str)
    if isinstance(entry.get("label"), list):  # type: ignore[union-attr]  (entry is a dict here)
        raise entry_error(
            path, i, "several labels in one entry; multi-label annotations are not supported", entry
        )
    label = get_key(entry, "label", path, i, int)
    start = get_key(entry, "start_frame", path, i, int)
    end = get_key(entry, "end_frame", path, i, int)
    if not 0 <= label < num_classes:
        raise entry_error(path, i, f"label {label} out of range 0..{num_classes - 1} ({VOCAB})")
    if not name.strip():
        raise entry_error(path, i, "empty vid_name")
    if start < 0 or end <= start:
        raise entry_error(
            path,
            i,
            f"bad frame range start_frame={start}, end_frame={end} (need 0 <= start_frame < end_frame)",
        )
    return VideoRecord(path=str(root / f"{name}{ext}"), label=label, start=start, end=end,
                       origin=entry_origin(path, i))
