"""Readers of the OFFICIAL annotation files of six video datasets (no conversion step).

Each parser is a plain function `(annotations, root, subset, ...) -> ParsedSplit` with
0-based labels (-1 = unlabelled test video) and class names in the official order; see
/work/shared/datasets.md and each module's docstring for the exact formats and quirks.
Malformed lines raise `AnnotationError` (file:line, what was expected); a missing file
raises `FileNotFoundError` naming the path and the `dataset.annotations` folder searched.

| dataset     | "val"                 | "test"                          |
|-------------|-----------------------|---------------------------------|
| kinetics400 | validate.csv          | test.csv (labels -1 if absent)  |
| sthv1/sthv2 | validation file       | test file (ids only → label -1) |
| ucf101      | testlist0{split}      | same as "val"                   |
| hmdb51      | code 2 of split files | same as "val"                   |
| diving48    | Diving48_V2_test.json | same as "val"                   |
"""

from __future__ import annotations

from collections.abc import Callable

from tempo.data.official.diving48 import parse_diving48
from tempo.data.official.hmdb51 import parse_hmdb51
from tempo.data.official.kinetics import class_folder_name, clip_file_name, parse_kinetics400
from tempo.data.official.something import parse_sthv1, parse_sthv2, strip_brackets
from tempo.data.official.ucf101 import parse_ucf101
from tempo.data.records import AnnotationError, ParsedSplit

PARSERS: dict[str, Callable[..., ParsedSplit]] = {
    "kinetics400": parse_kinetics400,
    "sthv1": parse_sthv1,
    "sthv2": parse_sthv2,
    "ucf101": parse_ucf101,
    "hmdb51": parse_hmdb51,
    "diving48": parse_diving48,
}


def parse_official(dataset: str, annotations, root, subset: str, **options) -> ParsedSplit:
    """Dispatch to the parser of `dataset` (a key of `PARSERS`)."""
    if dataset not in PARSERS:
        raise ValueError(f"unknown dataset {dataset!r}; official parsers exist for {sorted(PARSERS)}.")
    return PARSERS[dataset](annotations, root, subset, **options)


__all__ = [
    "PARSERS",
    "AnnotationError",
    "ParsedSplit",
    "class_folder_name",
    "clip_file_name",
    "parse_diving48",
    "parse_hmdb51",
    "parse_kinetics400",
    "parse_official",
    "parse_sthv1",
    "parse_sthv2",
    "parse_ucf101",
    "strip_brackets",
]
