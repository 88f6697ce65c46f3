"""Converting videos into stored formats for training: re-encoded video or JPEG frame folders.

`tempo.prepare` runs `convert_one` for every ok video of a dataset in worker processes;
`benchmarks/bench_pipeline.py` uses the same converter to measure each stored format.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from tempo.data.encode import write_video
from tempo.data.manifest import count_images, probe_num_frames
from tempo.data.sources import PyAVSource
from tempo.data.sparse_decode import to_rgb

# Stored formats `format=<name>` writes: name -> `tempo.data.encode.write_video` settings (keyframe
# interval, x264 crf, extra encoder options). benchmarks/bench_pipeline.py measures each.
# H.264 in MP4 whatever the file's suffix (the same relative paths keep the annotations valid;
# FFmpeg, decord and PyAV probe the content): MP4 carries B-frame timestamps, AVI does not.
# crf 23 is x264's default quality (that of the typical original); `tune=fastdecode` drops CABAC and
# deblocking, which makes decoding faster for some 10 % more bits.
H264_MP4 = {"codec": "libx264", "container_format": "mp4"}
FAST_DECODE = {"tune": "fastdecode"}
SPARSE_B = "bframes=15:b-adapt=0:b-pyramid=none:scenecut=0:ref=1"
FORMATS: dict[str, dict] = {
    # the pre-existing `gop=16` re-encode (x264 defaults otherwise: b-pyramid, 3 B-frames)
    "gop16": {"gop": 16, **H264_MP4},
    # all-intra: every frame a keyframe, a clip decodes exactly its 8 frames
    "intra": {"gop": 1, "quality": 23, "options_extra": FAST_DECODE, **H264_MP4},
    # I/P anchors every 16 frames with 15 non-reference B-frames between them: with the sparse
    # decoder a target costs its anchors and itself, at a fraction of all-intra's size
    "sparse_b16": {"gop": 16, "quality": 23, "options_extra": {**FAST_DECODE, "x264-params": SPARSE_B},
                   **H264_MP4},
}
# what `format=fast` writes: the fastest per byte in `make bench` (README, "Data path speed")
FAST_FORMAT = "intra"
FAST_TRADE_OFF = ("intra = all-intra H.264, crf 23, tune=fastdecode, short side 256, packet index stored: "
                  "measured 17x the clips/s of decord on the original files at 1.8x their disk size "
                  "(make bench's Kinetics-like videos; real Kinetics clips: 11-12x at 1.2x, 35 dB PSNR); "
                  "sparse_b16 10x at 1.55x, JPEG folders 18x at 9x")
FAST_SHORT_SIDE = 256


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


def _rgb_frames(src: str, short_side: int | None):
    """(fps, iterator of resized RGB uint8 frames) of a video, decoded with PyAV."""
    import av

    container = av.open(src)
    stream = container.streams.video[0]
    fps = stream.average_rate or stream.guessed_rate or 25

    def frames():
        with container:
            for frame in container.decode(stream):
                h, w = _scaled(frame.height, frame.width, short_side)
                yield to_rgb(frame, w, h)

    return fps, frames()


def convert_one(job: Job) -> tuple[str, int | str]:
    """Re-encode or extract one video; (dst, frames written) or (dst, error). Writes atomically."""
    dst = Path(job.dst)
    if dst.exists() and not job.overwrite:
        return job.dst, count_images(job.dst) if job.frames else probe_num_frames(job.dst)
    partial = dst.with_name(f".{dst.stem}.partial{dst.suffix}")
    try:
        fps, frames = _rgb_frames(job.src, job.short_side)
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
