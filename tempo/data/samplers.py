"""Which frames to read: pure functions of (num_frames, rng) → frame indices.

Samplers do no I/O. In training they draw from the given `numpy.random.Generator`;
in evaluation they are deterministic. `sample(num_frames, rng)` returns an int64
array of shape (num_clips, clip_frames); training always yields one clip.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _as_clips(idx: np.ndarray, num_frames: int) -> np.ndarray:
    return np.clip(np.asarray(idx, dtype=np.int64), 0, max(num_frames - 1, 0))


@dataclass(frozen=True)
class SegmentSampler:
    """TSN sampling: split the video into `num_segments` equal parts, one frame each.

    Train: a random frame inside each segment. Eval: each segment's centre frame.
    Test with `num_clips` > 1: the segment offsets are spread uniformly (TSM's
    "twice sample" generalised), giving one clip per offset.
    Videos shorter than `num_segments` repeat frames (indices are non-decreasing).
    """

    num_segments: int = 8
    num_clips: int = 1

    @property
    def clip_frames(self) -> int:
        return self.num_segments

    def sample(self, num_frames: int, rng: np.random.Generator | None = None) -> np.ndarray:
        seg = num_frames / self.num_segments
        starts = np.arange(self.num_segments) * seg
        if rng is not None:
            # floor(start + U*seg) lies inside segment k; for short videos segments repeat frames.
            offsets = rng.random(self.num_segments) * seg
            return _as_clips(np.floor(starts + offsets), num_frames)[None]
        fractions = (np.arange(self.num_clips) + 0.5) / self.num_clips
        return _as_clips(np.floor(starts[None] + fractions[:, None] * seg), num_frames)


@dataclass(frozen=True)
class _StridedClips:
    """Clips of `clip_len` frames taken every `interval` frames."""

    clip_len: int = 8
    interval: int = 2

    @property
    def clip_frames(self) -> int:
        return self.clip_len

    @property
    def span(self) -> int:
        """Frames one clip covers, first to last."""
        return (self.clip_len - 1) * self.interval + 1


@dataclass(frozen=True)
class DenseSampler(_StridedClips):
    """`clip_len` frames every `interval` frames (I3D/SlowOnly "32×2" clips).

    Train: one clip at a random start. Eval: `num_clips` clips with uniformly spaced
    starts (centre clip when `num_clips` = 1). Frames past the end repeat the last one,
    or, with `loop_pad`, wrap around to the start (ST-MANet's loop-padding of videos
    shorter than a clip [D32]); clips that fit are the same either way.
    """

    num_clips: int = 1
    loop_pad: bool = False

    def sample(self, num_frames: int, rng: np.random.Generator | None = None) -> np.ndarray:
        room = max(num_frames - self.span, 0)
        if rng is not None:
            starts = np.array([rng.integers(0, room + 1)])
        elif self.num_clips == 1:
            starts = np.array([room // 2])
        else:
            starts = np.floor((np.arange(self.num_clips) + 0.5) * (room + 1) / self.num_clips)
        offsets = np.arange(self.clip_len) * self.interval
        idx = starts[:, None] + offsets[None]
        if self.loop_pad and num_frames > 0:
            idx = np.asarray(idx, dtype=np.int64) % num_frames
        return _as_clips(idx, num_frames)


@dataclass(frozen=True)
class ConsecutiveSampler(_StridedClips):
    """Consecutive windows: every window of `clip_len` frames with step `interval`,
    starting every `stride` frames (ST-MANet protocol: all 64-frame windows, stride 32).

    Train: one random window. Eval: all windows covering the video (at least one;
    the last is padded by repeating the last frame). `max_clips` caps memory.
    """

    clip_len: int = 32
    interval: int = 2
    stride: int = 32
    max_clips: int | None = None

    def sample(self, num_frames: int, rng: np.random.Generator | None = None) -> np.ndarray:
        offsets = np.arange(self.clip_len) * self.interval
        room = max(num_frames - self.span, 0)
        if rng is not None:
            return _as_clips(rng.integers(0, room + 1) + offsets, num_frames)[None]
        starts = np.arange(0, room + 1, self.stride)
        if self.max_clips is not None and len(starts) > self.max_clips:
            starts = starts[np.linspace(0, len(starts) - 1, self.max_clips).round().astype(int)]
        return _as_clips(starts[:, None] + offsets[None], num_frames)
