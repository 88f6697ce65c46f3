"""Checking videos as training will read them: exists, opens with the training backend, has frames, and
(decode) its first and last usable frames decode. Used by `tempo.prepare`, in a thread pool."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from tempo.data.manifest import count_images, probe_num_frames
from tempo.data.records import VideoRecord

console = Console()


@dataclass(frozen=True)
class Check:
    """The outcome for one video or frame folder."""

    path: str
    status: str  # ok | missing | broken
    num_frames: int | None = None
    error: str | None = None


def _decode_ends(record: VideoRecord, num_frames: int | None, backend: str, source_kwargs: dict) -> int:
    """Open with the backend training uses and decode the first and last usable frames;
    returns the frame count the source reports."""
    from tempo.data.sources import open_source

    kwargs = dict(source_kwargs)  # with the dataset's stored-index folder: training opens it indexed
    if backend == "frames":
        kwargs["num_frames"] = num_frames
    source = open_source(record.path, backend, **kwargs)
    end = source.num_frames if record.end is None else min(record.end, source.num_frames)
    if end <= record.start:
        raise ValueError(f"no frames in [{record.start}, {record.end}) (the video has {source.num_frames})")
    source.read(sorted({record.start, end - 1}))
    return source.num_frames


def check_record(record: VideoRecord, backend: str = "pyav", source_kwargs: dict | None = None,
                 decode: bool = True) -> Check:
    """Exists? Opens with ≥ 1 frame? (decode) Do its first and last usable frames decode?"""
    path = record.path
    if not os.path.exists(path):
        return Check(path, "missing", error="does not exist")
    try:
        # a video is opened once: by the decoding source when decoding, else by the frame probe
        num_frames = count_images(path) if os.path.isdir(path) else None
        if decode:
            num_frames = _decode_ends(record, num_frames, backend, source_kwargs or {})
        elif num_frames is None:
            num_frames = probe_num_frames(path)
        if num_frames < 1:
            raise ValueError("no frames")
    except Exception as err:  # every failure is a finding, never a crash
        reason = getattr(err, "reason", None) or f"{type(err).__name__}: {err}"
        return Check(path, "broken", error=" ".join(str(reason).split())[:500])
    return Check(path, "ok", num_frames=num_frames)


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console)


def run_parallel(fn: Callable, items: Sequence, workers: int, description: str,
                 processes: bool = False) -> list:
    """`fn` over `items` in a pool (threads, or spawned processes), in order, with a progress bar."""
    if not items:
        return []
    workers = max(1, min(workers, len(items)))
    pool = (ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) if processes
            else ThreadPoolExecutor(workers))
    results = []
    with pool, _progress() as progress:
        task = progress.add_task(description, total=len(items))
        for result in pool.map(fn, items):
            results.append(result)
            progress.advance(task)
    return results


def check_all(records: Iterable[VideoRecord], backend: str, source_kwargs: dict, decode: bool,
              workers: int) -> dict[str, Check]:
    """path → Check for the unique paths of `records` (a video listed twice is checked once)."""
    unique = list({r.path: r for r in records}.values())

    def one(record: VideoRecord) -> Check:
        return check_record(record, backend, source_kwargs, decode)

    checks = run_parallel(one, unique, workers, f"checking {len(unique)} videos")
    return {c.path: c for c in checks}
