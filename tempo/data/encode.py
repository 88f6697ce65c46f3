"""Writing videos with PyAV (synthetic data, test fixtures, `tempo.prepare` re-encoding)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import av
import numpy as np

# container suffix -> (codec, pixel format); all widely decodable by decord and FFmpeg.
CODECS = {".mp4": "libx264", ".webm": "libvpx", ".avi": "mpeg4", ".mkv": "libx264"}


def write_video(
    path: str | Path,
    frames: Iterable[np.ndarray],
    fps: int = 12,
    codec: str | None = None,
    gop: int | None = None,
    quality: int = 18,
) -> Path:
    """Encode RGB uint8 frames (H, W, 3) to `path`; codec chosen by suffix unless given.

    H and W must be even (yuv420p). `gop` sets the keyframe interval (short GOPs make
    random access fast).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    codec = codec or CODECS.get(path.suffix.lower(), "libx264")
    frames = iter(frames)
    first = next(frames)
    h, w = first.shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.codec_context.thread_count = 1  # multi-threaded encoders are not bit-reproducible
        options = {}
        if codec == "libx264":
            options["crf"] = str(quality)
            options["preset"] = "veryfast"
        elif codec == "libvpx":
            options.update({"crf": str(max(quality, 4)), "b": "1M"})
        else:
            stream.bit_rate = 2_000_000
        if gop:
            options["g"] = str(gop)
            stream.gop_size = gop
        stream.options = options
        for frame in _chain(first, frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _chain(first, rest):
    yield first
    yield from rest
