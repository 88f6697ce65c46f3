"""UCF-101 from the official `ucfTrainTestlist/` files.

`classInd.txt` (`1 ApplyEyeMakeup` …, 1-based) fixes the class order. `trainlist0{k}.txt`
lines are `<class>/<file>.avi <label>`, `testlist0{k}.txt` lines `<class>/<file>.avi`.
The class is always taken from the DIRECTORY (folder `HandstandPushups` holds files
`v_HandStandPushups_*`); a trainlist label that disagrees with its directory is an error.
There is no separate test set: "val" and "test" both read `testlist0{k}.txt`.
`annotations` may be the `ucfTrainTestlist` folder or its parent.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from tempo.data.official._common import (
    annotation_folders,
    check_split,
    check_subset,
    ensure_records,
    find_file,
    line_error,
    line_origin,
    read_lines,
)
from tempo.data.records import AnnotationError, ParsedSplit, VideoRecord

DATASET = "ucf101"
SUBFOLDER = "ucfTrainTestlist"


def read_class_ind(path: Path) -> list[str]:
    """Class names from `classInd.txt`, ordered by their (1-based) index."""
    by_index: dict[int, str] = {}
    for lineno, line in read_lines(path):
        fields = line.split()
        if len(fields) != 2 or not fields[0].isdigit():
            raise line_error(path, lineno, "expected '<index> <ClassName>' (e.g. '1 ApplyEyeMakeup')", line)
        idx = int(fields[0])
        if idx in by_index:
            raise line_error(path, lineno, f"index {idx} already used by {by_index[idx]!r}", line)
        by_index[idx] = fields[1]
    if not by_index:
        raise AnnotationError(f"{path}: no classes found (empty file?).")
    if sorted(by_index) != list(range(1, len(by_index) + 1)):
        raise AnnotationError(
            f"{path}: class indices must run 1..{len(by_index)} without gaps, got "
            f"{sorted(by_index)[:3]}…{sorted(by_index)[-3:]}."
        )
    names = [by_index[i] for i in range(1, len(by_index) + 1)]
    if len(set(names)) != len(names):
        raise AnnotationError(f"{path}: a class name appears twice.")
    return names


def parse_ucf101(annotations: str | Path, root: str | Path, subset: str, split: int = 1) -> ParsedSplit:
    """Records (`<root>/<class>/<file>.avi`) of one UCF-101 subset for official split 1, 2 or 3."""
    check_subset(subset, DATASET)
    check_split(split, DATASET)
    folders = annotation_folders(annotations, DATASET, SUBFOLDER)
    class_names = read_class_ind(find_file(folders, ["classInd.txt"], DATASET, "classInd.txt"))
    index = {name: i for i, name in enumerate(class_names)}
    list_name = f"trainlist0{split}.txt" if subset == "train" else f"testlist0{split}.txt"
    path = find_file(folders, [list_name], DATASET, f"{subset} list for split {split}")
    records = [
        _record(line, lineno, path, index, Path(root), subset == "train") for lineno, line in read_lines(path)
    ]
    ensure_records(records, path)
    return ParsedSplit(records=records, class_names=class_names)


def _record(
    line: str, lineno: int, path: Path, index: dict[str, int], root: Path, labelled: bool
) -> VideoRecord:
    expected = "'<Class>/<file>.avi <label>'" if labelled else "'<Class>/<file>.avi'"
    fields = line.split()
    if len(fields) > 2:
        raise line_error(
            path, lineno, f"too many fields: expected {expected} (multi-label lines are not supported)", line
        )
    if labelled and len(fields) < 2:
        raise line_error(path, lineno, f"too few fields: expected {expected}", line)
    rel = PurePosixPath(fields[0].replace("\\", "/"))
    if len(rel.parts) < 2:
        raise line_error(path, lineno, f"no class directory in the path: expected {expected}", line)
    class_name = rel.parts[-2]
    if class_name not in index:
        raise line_error(path, lineno, f"unknown class directory {class_name!r} (not in classInd.txt)", line)
    label = index[class_name]
    if len(fields) == 2:
        if not fields[1].isdigit():
            raise line_error(path, lineno, f"label should be an integer: expected {expected}", line)
        given = int(fields[1])
        if not 1 <= given <= len(index):
            raise line_error(path, lineno, f"label {given} out of range 1..{len(index)} (classInd.txt)", line)
        if given - 1 != label:
            raise line_error(
                path,
                lineno,
                f"label {given} disagrees with the directory {class_name!r} (classInd index {label + 1})",
                line,
            )
    return VideoRecord(path=str(root.joinpath(*rel.parts)), label=label, origin=line_origin(path, lineno))
