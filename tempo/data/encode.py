"""Writing videos with PyAV (synthetic data, test fixtures, `tempo.prepare` re-encoding)."""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction
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
    preset: str = "veryfast",
    options_extra: dict[str, str] | None = None,
    pts: Iterable[int] | None = None,
    container_format: str | None = None,
) -> Path:
    """Encode RGB uint8 frames (H, W, 3) or decoded `av.VideoFrame`s to `path`; codec chosen by
    suffix unless given.

    H and W must be even (yuv420p). A decoded frame goes in as its own YUV planes (converted only if
    its pixel format differs): no round trip through RGB, which alone costs a 4:2:0 video ~45 dB PSNR.
    `gop` sets the keyframe interval (short GOPs make random access fast). `preset` is x264's,
    `options_extra` extra encoder options (e.g. `{"x264-params": "bframes=3:b-pyramid=normal"}`);
    `pts` gives each frame's timestamp in units of 1/`fps` s (variable frame rate; default 0, 1, 2,
    ...). `container_format` overrides the one the suffix implies (FFmpeg readers probe the content,
    not the name).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    codec = codec or CODECS.get(path.suffix.lower(), "libx264")
    frames = iter(frames)
    first = next(frames)
    h, w = (first.height, first.width) if isinstance(first, av.VideoFrame) else first.shape[:2]
    with av.open(str(path), "w", format=container_format) as container:
        stream = container.add_stream(codec, rate=fps)
        if pts is not None:
            stream.time_base = Fraction(1, fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.codec_context.thread_count = 1  # multi-threaded encoders are not bit-reproducible
        options = {}
        if codec == "libx264":
            options["crf"] = str(quality)
            options["preset"] = preset
        elif codec == "libvpx":
            options.update({"crf": str(max(quality, 4)), "b": "1M"})
        else:
            stream.bit_rate = 2_000_000
        if gop:
            options["g"] = str(gop)
            stream.gop_size = gop
        options.update(options_extra or {})
        stream.options = options
        stamps = iter(pts) if pts is not None else None
        for frame in _chain(first, frames):
            video_frame = _video_frame(frame)
            if stamps is not None:
                video_frame.pts, video_frame.time_base = next(stamps), Fraction(1, fps)
            for packet in stream.encode(video_frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _video_frame(frame) -> av.VideoFrame:
    if not isinstance(frame, av.VideoFrame):
        return av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
    # a fresh frame of the same planes: a decoded one carries its source's timestamps, time base and
    # picture type, which the encoder would obey (libx264 forces the I/P/B type)
    return av.VideoFrame.from_ndarray(frame.to_ndarray(format="yuv420p"), format="yuv420p")


def _chain(first, rest):
    yield first
    yield from rest
