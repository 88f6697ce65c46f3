"""Reader for generic MMAction2/TSM-style annotation lists (the `dataset=list` config).

`<relpath> <label>` per line for videos, `<frame_dir> <num_frames> <label>` for frame
folders (see `tempo.data.records.read_list`). One list file per subset inside the
`annotations` folder; class names come from an optional file with one name per line
(line order = label), else they are the label numbers "0" … "K-1".
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from tempo.data.records import AnnotationError, ParsedSplit, read_list
from tempo.errors import ConfigError, MissingDataError

DEFAULT_FILES = {"train": "train.txt", "val": "val.txt", "test": "val.txt"}
KINDS = ("video", "frames")


def _resolve(annotations: str | Path, name: str) -> Path:
    path = Path(name)
    return path if path.is_absolute() else Path(annotations) / path


def read_class_names(path: Path) -> list[str]:
    """One class name per non-blank line; line order is the label."""
    if not path.is_file():
        raise MissingDataError(f"class-name file {path} does not exist; fix `dataset.classes` "
                                "(a file with one class name per line) or set it to null.")
    names = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    if not names:
        raise AnnotationError(f"{path}: no class names found (empty file?).")
    return names


def read_split(
    annotations: str | Path,
    root: str | Path,
    subset: str,
    *,
    files: Mapping[str, str] | None = None,
    kind: str = "video",
    classes: str | None = None,
    num_classes: int | None = None,
) -> ParsedSplit:
    """Records of one subset from its list file; paths are joined to `root`.

    files: list file per subset, relative to `annotations` (default train.txt / val.txt,
        test = val.txt). kind: "video" or "frames". classes: optional class-name file.
    """
    if kind not in KINDS:
        raise ConfigError(f"list kind must be one of {KINDS}, got {kind!r}; set `dataset.list_kind`.")
    files = {**DEFAULT_FILES, **(files or {})}
    if subset not in files:
        raise ConfigError(f"no list file configured for subset {subset!r}; set `dataset.files.{subset}`.")
    records = read_list(_resolve(annotations, files[subset]), root=root, kind=kind)
    if classes:
        class_names = read_class_names(_resolve(annotations, classes))
    else:
        if num_classes is None:
            num_classes = max(r.label for r in records) + 1
        class_names = [str(i) for i in range(num_classes)]
    return ParsedSplit(records=records, class_names=class_names)
