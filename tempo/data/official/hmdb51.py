"""HMDB-51 from the official `testTrainMulti_7030_splits/` files.

One file per class and split, `<class>_test_split{1,2,3}.txt`, lines `<video>.avi <code>`:
1 = train, 2 = test, 0 = not used in this split (excluded by design). The class list is
the sorted set of class names taken from the split FILE NAMES (videos are not needed to
derive it). Videos are `<root>/<class>/<video>`; names may contain spaces and
`[ ] ( ) & ; !` — paths are only ever joined, never passed through a shell.
There is no separate test set: "val" and "test" both select code 2.
`annotations` may be the `testTrainMulti_7030_splits` folder or its parent.
"""

from __future__ import annotations

import re
from pathlib import Path

from tempo.data.official._common import (
    annotation_folders,
    check_split,
    check_subset,
    line_error,
    line_origin,
    read_lines,
)
from tempo.data.records import AnnotationError, ParsedSplit, VideoRecord
from tempo.errors import MissingDataError

DATASET = "hmdb51"
SUBFOLDER = "testTrainMulti_7030_splits"
SPLIT_FILE = re.compile(r"^(?P<cls>.+)_test_split(?P<split>[123])\.txt$")
CODES = {0: "unused", 1: "train", 2: "test"}


def find_split_files(annotations: str | Path) -> dict[tuple[str, int], Path]:
    """{(class, split): file} from the first folder that holds split files."""
    for folder in annotation_folders(annotations, DATASET, SUBFOLDER):
        found = {}
        for path in folder.iterdir():
            m = SPLIT_FILE.match(path.name)
            if m and path.is_file():
                found[(m["cls"], int(m["split"]))] = path
        if found:
            return found
    raise MissingDataError(
        f"{DATASET}: no split files '<class>_test_split{{1,2,3}}.txt' found in {Path(annotations)} "
        f"or {Path(annotations) / SUBFOLDER} (`dataset.annotations`). Point it at the unpacked "
        "test_train_splits archive."
    )


def parse_hmdb51(annotations: str | Path, root: str | Path, subset: str, split: int = 1) -> ParsedSplit:
    """Records (`<root>/<class>/<video>`) of one HMDB-51 subset for official split 1, 2 or 3."""
    check_subset(subset, DATASET)
    check_split(split, DATASET)
    files = find_split_files(annotations)
    class_names = sorted({cls for cls, _ in files})
    wanted_code = 1 if subset == "train" else 2
    records: list[VideoRecord] = []
    for label, cls in enumerate(class_names):
        path = files.get((cls, split))
        if path is None:
            folder = next(iter(files.values())).parent
            raise MissingDataError(
                f"{DATASET}: split file {folder / f'{cls}_test_split{split}.txt'} is missing "
                f"(class {cls!r} has files for other splits; searched `dataset.annotations` = {folder})."
            )
        records.extend(_read_split_file(path, cls, label, wanted_code, Path(root)))
    if not records:
        raise AnnotationError(
            f"{DATASET}: no {subset} videos (code {wanted_code}) in the split {split} files."
        )
    return ParsedSplit(records=records, class_names=class_names)


def _read_split_file(path: Path, cls: str, label: int, wanted_code: int, root: Path) -> list[VideoRecord]:
    records, seen = [], 0
    for lineno, line in read_lines(path):
        seen += 1
        parts = line.rsplit(None, 1)
        if len(parts) < 2:
            raise line_error(
                path, lineno, "too few fields: expected '<video>.avi <code>' with code 0, 1 or 2", line
            )
        name, code_text = parts
        if re.search(r"\s\d+$", name):
            raise line_error(
                path,
                lineno,
                "several codes on one line; expected '<video>.avi <code>' "
                "(multi-label lines are not supported)",
                line,
            )
        if code_text not in ("0", "1", "2"):
            raise line_error(
                path, lineno, f"code should be 0 (unused), 1 (train) or 2 (test), got {code_text!r}", line
            )
        if int(code_text) == wanted_code:
            records.append(VideoRecord(path=str(root / cls / name), label=label, origin=line_origin(path, lineno)))
    if not seen:
        raise AnnotationError(f"{path}: empty split file; expected lines '<video>.avi <code>'.")
    return records
