"""Frame-count manifest: probe each video (or frame folder) once, cache the counts on disk.

Counting frames of ~240k Kinetics clips or ~100k SSv1 folders takes minutes; the manifest
stores `relative path → (num_frames, size, mtime_ns)` in one JSON file per dataset root
(under `cache_dir`, default `<tempo.data.cache.default_cache_dir()>/manifests`, i.e. `$TEMPO_CACHE_DIR/manifests`,
`$XDG_CACHE_HOME/tempo/manifests` or `~/.cache/tempo/manifests`),
so later runs only stat the files and re-probe the new or changed ones.

Probing runs in a thread pool: decord (ctypes calls) and PyAV release the GIL while they
read containers, and a frame folder is just a directory listing, so threads scale without
the pickling and start-up cost of processes (and any callable works as `probe`).
Failures never raise: they are collected in `FrameManifest.failures` (path → error) and
those records come back with `num_frames=None` for the caller to report or drop.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tempo.data.cache import default_cache_dir
from tempo.data.records import VideoRecord
from tempo.data.sources import IMAGE_SUFFIXES, DecodeError, open_video

FORMAT_VERSION = 1
Probe = Callable[[str], int]


def default_manifest_dir() -> Path:
    """``<default cache dir>/manifests``, as ``${paths.cache_dir}/manifests`` in the dataset configs."""
    return default_cache_dir() / "manifests"


# -- probing ---------------------------------------------------------------------------
def count_images(folder: str) -> int:
    """Number of JPEG/PNG files in a frame folder (no decoding)."""
    with os.scandir(folder) as it:
        return sum(1 for e in it if e.name.lower().endswith(IMAGE_SUFFIXES) and e.is_file())


def probe_num_frames(path: str) -> int:
    """Frames of a video file (decord, falling back to PyAV: `sources.open_video`) or images in a frame folder."""
    if os.path.isdir(path):
        n = count_images(path)
        if n == 0:
            raise ValueError(f"frame folder {path} holds no {'/'.join(IMAGE_SUFFIXES)} files")
        return n
    n = open_video(path).num_frames
    if n <= 0:
        raise DecodeError(path, "no frames")
    return n


# -- manifest --------------------------------------------------------------------------
class FrameManifest:
    """Cached frame counts for the videos under one dataset root.

    >>> manifest = FrameManifest(root)
    >>> records = manifest.fill(records)          # probes only new/changed files
    >>> manifest.failures                          # {path: "error"} of this fill
    """

    def __init__(self, root: str | Path, cache_dir: str | Path | None = None):
        self.root = Path(os.path.abspath(root))
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_manifest_dir()
        self.path = self.cache_dir / manifest_file_name(self.root)
        self.entries: dict[str, tuple[int, int, int]] = self._load()
        self.failures: dict[str, str] = {}
        self.probed = 0  # probe calls made by the last fill()

    def _load(self) -> dict[str, tuple[int, int, int]]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}  # no cache yet, or an unreadable one: start afresh (it is only a cache)
        if (
            not isinstance(data, dict)
            or data.get("version") != FORMAT_VERSION
            or data.get("root") != str(self.root)
        ):
            return {}
        entries = data.get("entries")
        if not isinstance(entries, dict):
            return {}
        return {k: tuple(v) for k, v in entries.items() if isinstance(v, list) and len(v) == 3}

    def save(self) -> None:
        """Write atomically (temp file + rename) so concurrent readers never see half a file.

        Entries another process saved meanwhile (e.g. another subset) are merged in; ours win.
        """
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.entries = {**self._load(), **self.entries}
        data = {"version": FORMAT_VERSION, "root": str(self.root), "entries": self.entries}
        fd, tmp = tempfile.mkstemp(dir=self.cache_dir, prefix=self.path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(data, f, separators=(",", ":"), sort_keys=True)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def key(self, path: str) -> str:
        """Path relative to the root (absolute when outside it)."""
        absolute = os.path.abspath(path)
        rel = os.path.relpath(absolute, self.root)
        return absolute if rel.startswith("..") else rel

    def lookup(self, path: str) -> int | None:
        """Cached count if the file's size and mtime still match, else None."""
        try:
            stamp = _stamp(path)
        except OSError:
            return None
        entry = self.entries.get(self.key(path))
        return entry[0] if entry is not None and tuple(entry[1:]) == stamp else None

    def add(self, path: str, num_frames: int) -> None:
        """Store a count found elsewhere (e.g. by `tempo.prepare`'s full check); call `save()` after."""
        self.entries[self.key(path)] = (int(num_frames), *_stamp(path))

    def fill(
        self, records: Iterable[VideoRecord], probe: Probe = probe_num_frames, workers: int | None = None
    ) -> list[VideoRecord]:
        """Records with `num_frames` set; unknown/changed paths are probed in parallel.

        Records that already carry `num_frames` (e.g. from a rawframes list) are kept as
        they are. Records that fail (missing file, undecodable, 0 frames) keep
        `num_frames=None` and are listed in `self.failures`. The cache is saved once.
        """
        records = list(records)
        self.failures = {}
        known: dict[str, int] = {}
        todo: dict[str, tuple[int, int]] = {}
        for rec in records:
            if (
                rec.num_frames is not None
                or rec.path in known
                or rec.path in todo
                or rec.path in self.failures
            ):
                continue
            try:
                stamp = _stamp(rec.path)
            except OSError as err:
                self.failures[rec.path] = f"{type(err).__name__}: {err}"
                continue
            entry = self.entries.get(self.key(rec.path))
            if entry is not None and tuple(entry[1:]) == stamp:
                known[rec.path] = entry[0]
            else:
                todo[rec.path] = stamp
        self.probed = len(todo)
        if todo:
            known.update(self._probe_all(todo, probe, workers))
            self.save()
        return [
            r if r.num_frames is not None or r.path not in known else r.with_frames(known[r.path])
            for r in records
        ]

    def _probe_all(
        self, todo: dict[str, tuple[int, int]], probe: Probe, workers: int | None
    ) -> dict[str, int]:
        workers = workers or min(8, os.cpu_count() or 1)
        found = {}
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for path, result in zip(todo, pool.map(lambda p: _safe_probe(probe, p), todo), strict=True):
                if isinstance(result, int):
                    found[path] = result
                    self.entries[self.key(path)] = (result, *todo[path])
                else:
                    self.failures[path] = result
        return found


def _safe_probe(probe: Probe, path: str) -> int | str:
    """The frame count, or an error string (never raises)."""
    try:
        n = probe(path)
    except Exception as err:  # failures are collected, not raised
        return f"{type(err).__name__}: {err}"
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        return f"probe returned {n!r} frames"
    return n


def _stamp(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


def manifest_file_name(root: Path) -> str:
    """`<root folder name>-<hash of the absolute root>.json` (readable and unique)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", root.name)[:40] or "root"
    digest = hashlib.sha1(str(root).encode()).hexdigest()[:12]
    return f"{slug}-{digest}.json"
