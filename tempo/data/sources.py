"""Where frames come from: one video file or frame folder → uint8 (T, H, W, 3).

Opening is lazy (metadata only); `read(indices)` decodes just the requested frames, exactly as a
full decode returns them (docs/datasets-decoding.md). Every failure is raised as `DecodeError`
naming the file, so the dataset can report and skip it; a file that is no video (text, a still
image) as `NotAVideo`. `PyAVSource` lives in `pyav_source`, the shared pieces in `frame_source`,
the rules on timestamps and on what is video in `stream_checks`; all are importable from here.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

from tempo.data.frame_source import (  # noqa: F401 - re-exported: the sources' public names live here
    DecodeError,
    FrameSource,
    NotAVideo,
    check_file,
    check_indices,
    first_video_stream,
)
from tempo.data.pyav_source import PyAVSource
from tempo.data.stream_checks import UnknownOrder, packet_stamps

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# codecs whose B-frame streams decord reads exactly (tests/test_frame_order.py); it returns wrong frames
# for MPEG-4 part 2 with B-frames, in AVI and MP4 alike
DECORD_EXACT_WITH_BFRAMES = {"h264", "hevc"}


class DecordSource(FrameSource):
    """decord VideoReader: fast seeking, decodes only requested frames. PyAV demuxes the file first (no
    decoding): it must be a video, and a stream whose timestamps cannot order its frames
    (`stream_checks`; decord seeks and counts by them), or with B-frames of a codec decord miscounts, is
    read by `PyAVSource` instead."""

    def __init__(self, path: str | Path, num_threads: int = 1):
        import decord

        self.path = str(path)
        check_file(self.path)
        self._exact = None
        if self._needs_pyav():
            self._exact = PyAVSource(self.path)
            self.num_frames = self._exact.num_frames
            return
        try:
            self._reader = decord.VideoReader(self.path, num_threads=num_threads)
            self.num_frames = len(self._reader)
        except Exception as err:  # decord raises its own DECORDError / RuntimeError
            raise DecodeError(self.path, f"decord could not open it ({err.__class__.__name__}: {err})") from err

    def _needs_pyav(self) -> str | None:
        """Why decord would not return the full decode's frames (one demux, no decoding): timestamps that
        cannot order the frames, or a codec whose B-frames it miscounts."""
        import av

        try:
            with av.open(self.path) as container:
                stream = first_video_stream(self.path, container)
                codec, reorders = stream.codec_context.name, stream.codec_context.has_b_frames
                packet_stamps(container, stream, [p for p in container.demux(stream) if p.size and not p.is_discard])
            if reorders and codec not in DECORD_EXACT_WITH_BFRAMES:
                return f"decord's seeks miss frames of {codec} streams with B-frames"
        except UnknownOrder as err:
            return str(err)
        except av.FFmpegError:
            pass  # decord may still read what PyAV cannot open: let it try
        return None

    def read(self, indices) -> torch.Tensor:
        if self._exact is not None:
            return self._exact.read(indices)
        idx = check_indices(self.path, indices, self.num_frames)
        try:
            return torch.from_numpy(self._reader.get_batch(idx).asnumpy())
        except Exception as err:
            # decord has frame-size and codec bugs FFmpeg itself does not; PyAV decodes those
            log.warning("decord failed on %s (%s); decoding with PyAV instead", self.path,
                        str(err).splitlines()[-1][:200])
            try:
                return PyAVSource(self.path).read(idx)
            except DecodeError as fallback:
                raise DecodeError(self.path, f"decord failed ({err}); PyAV too ({fallback.reason})") from err


class FrameFolderSource(FrameSource):
    """A folder of JPEG/PNG frames named by a template (`{:05d}.jpg`, start 1 for SSv1)."""

    def __init__(self, path: str | Path, template: str = "{:05d}.jpg", start_index: int = 1,
                 num_frames: int | None = None):
        self.path = str(path)
        self.template = template
        self.start_index = start_index
        if not os.path.isdir(self.path):
            raise DecodeError(self.path, "frame folder does not exist (wrong `dataset.root`?)")
        if num_frames is None:
            num_frames = sum(1 for n in os.listdir(self.path) if n.lower().endswith(IMAGE_SUFFIXES))
        self.num_frames = num_frames

    def read(self, indices) -> torch.Tensor:
        idx = check_indices(self.path, indices, self.num_frames)
        return torch.from_numpy(np.stack([self._load(i) for i in idx]))

    def _load(self, i: int) -> np.ndarray:
        from PIL import Image

        file = os.path.join(self.path, self.template.format(i + self.start_index))
        try:
            with Image.open(file) as img:
                return np.asarray(img.convert("RGB"))
        except (OSError, ValueError) as err:
            raise DecodeError(file, f"image could not be read ({err})") from err


def open_video(path: str | Path, num_threads: int = 1) -> FrameSource:
    """The one decord → PyAV fallback: decord, else PyAV when decord is not installed, cannot open the
    file or finds no frames in it. A missing or empty file raises at once; when both fail the
    `DecodeError` names the path and both reasons."""
    path = str(path)
    check_file(path)
    try:
        source = DecordSource(path, num_threads=num_threads)
    except ImportError:
        return PyAVSource(path)
    except NotAVideo:
        raise
    except DecodeError as err:
        decord_reason = err.reason
    else:
        if source.num_frames > 0:
            return source
        decord_reason = "decord found no frames"
    try:
        return PyAVSource(path)
    except DecodeError as err:
        raise DecodeError(path, f"{decord_reason}; {err.reason}") from None


def open_source(path: str | Path, backend: str = "pyav", **kwargs) -> FrameSource:
    """Open a video with `backend`: "pyav" (default: reference-aware sparse decoding, exact),
    "decord" (decord's `get_batch`, falling back to PyAV via `open_video`) or "frames" (JPEG/PNG
    folders). `kwargs` may hold options of every backend (`dataset.source_kwargs`); each takes its own."""
    options = {"frames": ("template", "start_index", "num_frames"), "pyav": ("sparse", "threads", "index_dir"),
               "decord": ("num_threads",)}
    if backend not in options:
        raise ValueError(f"unknown video backend {backend!r}; choose pyav, decord or frames")
    kwargs = {k: v for k, v in kwargs.items() if k in options[backend]}
    if backend == "frames":
        return FrameFolderSource(path, **kwargs)
    if backend == "pyav":
        return PyAVSource(path, **kwargs)
    return open_video(path, **kwargs)
