"""Where frames come from: one video file or frame folder → uint8 (T, H, W, 3).

Opening is lazy (metadata only); `read(indices)` decodes just the requested frames.
Every failure is raised as `DecodeError` naming the file, so the dataset can report
and skip it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class DecodeError(RuntimeError):
    """A video or frame folder could not be read; the message names the path."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"cannot read {path}: {reason}")
        self.path = path
        self.reason = reason


class FrameSource:
    """Interface: `num_frames` and `read(indices) -> uint8 tensor (T, H, W, 3)`."""

    path: str
    num_frames: int

    def read(self, indices) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError


def _check_file(path: str) -> None:
    if not os.path.exists(path):
        raise DecodeError(path, "file does not exist (wrong `dataset.root`? run `python -m tempo.prepare`)")
    if os.path.getsize(path) == 0:
        raise DecodeError(path, "file is empty (0 bytes); re-download or remove it from the annotations")


def _check_indices(path: str, indices, num_frames: int) -> list[int]:
    idx = [int(i) for i in np.asarray(indices).reshape(-1)]
    if num_frames <= 0:
        raise DecodeError(path, "video has no decodable frames")
    bad = [i for i in idx if not 0 <= i < num_frames]
    if bad:
        raise DecodeError(path, f"frame index {bad[0]} outside the {num_frames} frames the video has")
    return idx


class DecordSource(FrameSource):
    """decord VideoReader: fast seeking, decodes only requested frames."""

    def __init__(self, path: str | Path, num_threads: int = 1):
        import decord

        self.path = str(path)
        _check_file(self.path)
        try:
            self._reader = decord.VideoReader(self.path, num_threads=num_threads)
            self.num_frames = len(self._reader)
        except Exception as err:  # decord raises its own DECORDError / RuntimeError
            raise DecodeError(self.path, f"decord could not open it ({err.__class__.__name__}: {err})") from err

    def read(self, indices) -> torch.Tensor:
        idx = _check_indices(self.path, indices, self.num_frames)
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


class PyAVSource(FrameSource):
    """PyAV decoding: the fallback when decord is missing or fails on a codec.

    Decodes sequentially up to the last requested frame (no seeking): robust and
    exact, slower for long videos.
    """

    def __init__(self, path: str | Path):
        import av

        self.path = str(path)
        _check_file(self.path)
        try:
            with av.open(self.path) as container:
                if not container.streams.video:
                    raise ValueError("no video stream")
                stream = container.streams.video[0]
                # the container's frame count, else one packet per frame (no decoding)
                self.num_frames = stream.frames or sum(1 for p in container.demux(stream) if p.size)
        except Exception as err:
            raise DecodeError(self.path, f"PyAV could not open it ({err.__class__.__name__}: {err})") from err

    def read(self, indices) -> torch.Tensor:
        import av

        idx = _check_indices(self.path, indices, self.num_frames)
        wanted = set(idx)
        last = max(idx)
        got: dict[int, np.ndarray] = {}
        try:
            with av.open(self.path) as container:
                for i, frame in enumerate(container.decode(video=0)):
                    if i in wanted:
                        got[i] = frame.to_ndarray(format="rgb24")
                    if i >= last:
                        break
        except Exception as err:
            raise DecodeError(self.path, f"PyAV failed to decode ({err})") from err
        missing = wanted - got.keys()
        if missing:
            raise DecodeError(self.path, f"video ended before frame {min(missing)} (truncated file?)")
        return torch.from_numpy(np.stack([got[i] for i in idx]))


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
        idx = _check_indices(self.path, indices, self.num_frames)
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
    _check_file(path)
    try:
        source = DecordSource(path, num_threads=num_threads)
    except ImportError:
        return PyAVSource(path)
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


def open_source(path: str | Path, backend: str = "decord", **kwargs) -> FrameSource:
    """Open a video with `backend` ("decord" | "pyav" | "frames"); "decord" falls back to PyAV
    (`open_video`)."""
    if backend == "frames":
        return FrameFolderSource(path, **kwargs)
    if backend == "pyav":
        return PyAVSource(path)
    if backend != "decord":
        raise ValueError(f"unknown video backend {backend!r}; choose decord, pyav or frames")
    return open_video(path, **kwargs)
