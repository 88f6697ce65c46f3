"""Shared helpers for the official-annotation parsers: file lookup, line reading, errors.

Every parser reports problems the same way: a missing file is a `FileNotFoundError`
naming the path and the `dataset.annotations` folder that was searched; a malformed line
or entry is an `AnnotationError` naming the file, the line (or JSON entry) and what was
expected.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tempo.data.records import AnnotationError
from tempo.errors import ConfigError, MissingDataError

SUBSETS = ("train", "val", "test")


def check_subset(subset: str, dataset: str) -> str:
    if subset not in SUBSETS:
        raise ConfigError(f"{dataset}: unknown subset {subset!r}; expected one of {SUBSETS}.")
    return subset


def check_split(split: int, dataset: str) -> int:
    if split not in (1, 2, 3):
        raise ConfigError(f"{dataset}: split must be 1, 2 or 3 (the three official splits), got {split!r}.")
    return split


def find_file(folders: Sequence[Path], names: Sequence[str], dataset: str, what: str) -> Path:
    """First existing `<folder>/<name>`; otherwise a FileNotFoundError listing what was tried."""
    for folder in folders:
        for name in names:
            path = folder / name
            if path.is_file():
                return path
    tried = ", ".join(str(folders[0] / n) for n in names)
    searched = " and ".join(str(f) for f in folders)
    raise MissingDataError(
        f"{dataset}: {what} not found: looked for {tried} (searched `dataset.annotations` = {searched}). "
        "Point `dataset.annotations` at the folder holding the official annotation files."
    )


def annotation_folders(annotations: str | Path, dataset: str, subfolder: str | None = None) -> list[Path]:
    """The annotations folder (and an official sub folder inside it, if that exists)."""
    folder = Path(annotations)
    if not folder.is_dir():
        raise MissingDataError(
            f"{dataset}: `dataset.annotations` = {folder} is not a folder; point it at the folder "
            "holding the official annotation files."
        )
    folders = [folder]
    if subfolder and (folder / subfolder).is_dir():
        folders.append(folder / subfolder)
    return folders


def read_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, stripped line) for every non-blank line; CRLF and BOM tolerated."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise AnnotationError(f"{path}: not valid UTF-8 text ({err}).") from err
    for lineno, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if line:
            yield lineno, line


def line_origin(path: Path, lineno: int) -> str:
    """`VideoRecord.origin` of a record read from line `lineno` (1-based) of a text annotation file."""
    return f"{path}:{lineno}"


def entry_origin(path: Path, index: int) -> str:
    """`VideoRecord.origin` of a record read from entry `index` of a JSON list."""
    return f"{path}: entry {index} (0-based) of the JSON list"


def line_error(path: Path, lineno: int, message: str, line: str | None = None) -> AnnotationError:
    got = f" Got {line!r}." if line is not None else ""
    return AnnotationError(f"{path}:{lineno}: {message}.{got}")


def entry_error(path: Path, index: int, message: str, entry: Any = None) -> AnnotationError:
    got = f" Got {entry!r}." if entry is not None else ""
    return AnnotationError(f"{path}: entry {index} (0-based) of the JSON list: {message}.{got}")


def load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as err:
        raise AnnotationError(f"{path}:{err.lineno}: invalid JSON ({err.msg}, column {err.colno}).") from err


def load_json_list(path: Path) -> list[Any]:
    data = load_json(path)
    if not isinstance(data, list):
        raise AnnotationError(f"{path}: expected a JSON list of objects, got a {type(data).__name__}.")
    return data


def get_key(entry: Any, key: str, path: Path, index: int, types: type | tuple[type, ...]) -> Any:
    """`entry[key]`, checked to be a JSON object holding a value of `types` under `key`."""
    if not isinstance(entry, dict):
        raise entry_error(path, index, "expected a JSON object", entry)
    if key not in entry:
        raise entry_error(path, index, f"missing key {key!r} (keys: {sorted(entry)})", entry)
    value = entry[key]
    if isinstance(value, bool) or not isinstance(value, types):
        names = types.__name__ if isinstance(types, type) else "/".join(t.__name__ for t in types)
        raise entry_error(path, index, f"{key!r} should be a {names}, got {value!r}")
    return value


def parse_int(text: str, path: Path, lineno: int, what: str, line: str) -> int:
    """An integer field; '14.0' is accepted as 14 (some CSV exports write floats)."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if value.is_integer():
        return int(value)
    raise line_error(path, lineno, f"{what} should be an integer, got {text!r}", line)


def ensure_records(records: list, path: Path) -> None:
    if not records:
        raise AnnotationError(f"{path}: no records found (empty or wrong file?).")
