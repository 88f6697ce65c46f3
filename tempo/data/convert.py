"""Converting videos into stored formats for training: re-encoded video or JPEG frame folders
(the formats and what they were measured to cost: `tempo.data.formats`).

`tempo.prepare` runs `convert_one` for every ok video of a dataset in worker processes;
`benchmarks/bench_pipeline.py` uses the same converter to measure each stored format.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from tempo.data.encode import write_video
from tempo.data.formats import FORMATS
from tempo.data.manifest import count_images, probe_num_frames
from tempo.data.sources import PyAVSource
from tempo.data.sparse_decode import to_rgb


@dataclass(frozen=True)
class Job:
    src: str
    dst: str
    short_side: int | None
    frames: bool
    gop: int | str | None  # keyframe interval, or a FORMATS name
    quality: int
    template: str
    start_index: int
    overwrite: bool
    index_dir: str | None = None  # store the written video's packet index here (tempo.data.packet_store)


def _scaled(height: int, width: int, short_side: int | None) -> tuple[int, int]:
    """(height, width) with the short side `short_side`, both even (yuv420p)."""
    if short_side is None:
        return height - height % 2, width - width % 2
    scale = short_side / min(height, width)
    return max(2, round(height * scale / 2) * 2), max(2, round(width * scale / 2) * 2)


def _decoded_frames(src: str, short_side: int | None, rgb: bool):
    """(fps, iterator of resized frames) of a video, decoded with PyAV: RGB uint8 arrays (`rgb`), else
    yuv420p `av.VideoFrame`s that the encoder takes as they are (no RGB round trip)."""
    import av

    container = av.open(src)
    stream = container.streams.video[0]
    fps = stream.average_rate or stream.guessed_rate or 25

    def frames():
        with container:
            for frame in container.decode(stream):
                h, w = _scaled(frame.height, frame.width, short_side)
                if rgb:
                    yield to_rgb(frame, w, h)
                elif (h, w) != (frame.height, frame.width) or frame.format.name != "yuv420p":
                    yield frame.reformat(w, h, "yuv420p")
                else:
                    yield frame

    return fps, frames()


def convert_one(job: Job) -> tuple[str, int | str]:
    """Re-encode or extract one video; (dst, frames written) or (dst, error). Writes atomically."""
    dst = Path(job.dst)
    if dst.exists() and not job.overwrite:
        return job.dst, count_images(job.dst) if job.frames else probe_num_frames(job.dst)
    partial = dst.with_name(f".{dst.stem}.partial{dst.suffix}")
    try:
        fps, frames = _decoded_frames(job.src, job.short_side, rgb=job.frames)
        if job.frames:
            n = _write_jpegs(partial, frames, job.template, job.start_index, job.quality)
        else:
            counted = _Counted(frames)
            encoding = FORMATS[job.gop] if isinstance(job.gop, str) else {"gop": job.gop}
            write_video(partial, counted, fps=fps, **encoding)
            n = counted.n
        _remove(dst)
        partial.rename(dst)
        if job.index_dir and not job.frames:  # the first epoch then opens it as fast as the later ones
            PyAVSource(dst, index_dir=job.index_dir).close()
    except Exception as err:  # reported per video, the others go on
        _remove(partial)
        return job.dst, f"{type(err).__name__}: {err}"
    return job.dst, n


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


class _Counted:
    def __init__(self, items):
        self.items, self.n = items, 0

    def __iter__(self):
        for item in self.items:
            self.n += 1
            yield item


def _write_jpegs(folder: Path, frames, template: str, start_index: int, quality: int) -> int:
    from PIL import Image

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    n = 0
    for n, frame in enumerate(frames, start=1):
        Image.fromarray(frame).save(folder / template.format(n - 1 + start_index), quality=quality)
    if n == 0:
        raise ValueError("no frames decoded")
    return n


def default_output_root(root: str, short_side: int | None, frames: bool) -> Path:
    base = Path(root.rstrip("/"))
    suffix = ("_frames" if frames else "") + (f"_short{short_side}" if short_side else "")
    return base.with_name(base.name + suffix)
