"""The pieces every frame source shares: `DecodeError`, the `FrameSource` interface, file and index checks."""

from __future__ import annotations

import os

import numpy as np
import torch

from tempo.data.stream_checks import not_video


class DecodeError(RuntimeError):
    """A video or frame folder could not be read; the message names the path."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"cannot read {path}: {reason}")
        self.path = path
        self.reason = reason


class NotAVideo(DecodeError):  # noqa: N818 - a DecodeError; the name says which
    """FFmpeg opens the file, but as text or a still image (`stream_checks.not_video`)."""


def first_video_stream(path: str, container):
    """The container's first video stream; `NotAVideo` when it is text or an image drawn as one."""
    if not container.streams.video:
        raise DecodeError(path, "no video stream")
    stream = container.streams.video[0]
    reason = not_video(container.format.name, stream.codec_context.name)
    if reason:
        raise NotAVideo(path, reason)
    return stream


class FrameSource:
    """Interface: `num_frames` and `read(indices) -> uint8 tensor (T, H, W, 3)`."""

    path: str
    num_frames: int

    def read(self, indices) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError


def check_file(path: str) -> None:
    if not os.path.exists(path):
        raise DecodeError(path, "file does not exist (wrong `dataset.root`? run `python -m tempo.prepare`)")
    if os.path.getsize(path) == 0:
        raise DecodeError(path, "file is empty (0 bytes); re-download or remove it from the annotations")


def check_indices(path: str, indices, num_frames: int) -> list[int]:
    idx = [int(i) for i in np.asarray(indices).reshape(-1)]
    if num_frames <= 0:
        raise DecodeError(path, "video has no decodable frames")
    bad = [i for i in idx if not 0 <= i < num_frames]
    if bad:
        raise DecodeError(path, f"frame index {bad[0]} outside the {num_frames} frames the video has")
    return idx
