"""uint8 clip transforms, one random draw per clip (all frames share a crop/flip).

A sample is a dict: `video` uint8 tensor (V, T, C, H, W) (V views; 1 in training)
and `label` int. Transforms map sample → sample and keep the leading view axis;
multi-crop transforms (`ThreeCrop`) multiply V. Float conversion and mean/std
normalisation happen later on the device (see `RecognitionModule`).
Randomness comes from torch's RNG, which `VideoDataset` seeds per sample in training (from
(seed, epoch, index): `tempo.data.resumable`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

Sample = dict


def _resize(video: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(video.shape[-2:]) == tuple(size):
        return video
    lead = video.shape[:-3]
    flat = video.reshape(-1, *video.shape[-3:])
    shrinking = size[0] < flat.shape[-2] or size[1] < flat.shape[-1]
    out = F.interpolate(flat, size=size, mode="bilinear", align_corners=False, antialias=shrinking)
    return out.reshape(*lead, *out.shape[-3:])


def _crop(video: torch.Tensor, top: int, left: int, h: int, w: int) -> torch.Tensor:
    return video[..., top : top + h, left : left + w]


def _rand_int(high: int) -> int:
    """Uniform integer in [0, high]."""
    return int(torch.randint(0, high + 1, ())) if high > 0 else 0


class Compose:
    def __init__(self, transforms: Sequence[Callable[[Sample], Sample]]):
        self.transforms = list(transforms)

    def __call__(self, sample: Sample) -> Sample:
        for t in self.transforms:
            sample = t(sample)
        return sample

    def __repr__(self) -> str:
        return "Compose(" + ", ".join(t.__class__.__name__ for t in self.transforms) + ")"


class ResizeShortSide:
    """Scale so the shorter side is `size`, keeping the aspect ratio."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, sample: Sample) -> Sample:
        h, w = sample["video"].shape[-2:]
        scale = self.size / min(h, w)
        new = (round(h * scale), round(w * scale))
        return {**sample, "video": _resize(sample["video"], new)}


class Resize:
    """Resize to exactly (height, width), aspect not kept (Something-Something 240×320)."""

    def __init__(self, height: int, width: int):
        self.size = (height, width)

    def __call__(self, sample: Sample) -> Sample:
        return {**sample, "video": _resize(sample["video"], self.size)}


class _SquareCrop:
    """Square crops of side `size` (smaller when the frame is smaller)."""

    def __init__(self, size: int):
        self.size = size

    def _geometry(self, video: torch.Tensor) -> tuple[int, int, int]:
        h, w = video.shape[-2:]
        return h, w, min(self.size, h, w)


class CenterCrop(_SquareCrop):
    def __call__(self, sample: Sample) -> Sample:
        h, w, s = self._geometry(sample["video"])
        return {**sample, "video": _crop(sample["video"], (h - s) // 2, (w - s) // 2, s, s)}


class RandomCrop(_SquareCrop):
    def __call__(self, sample: Sample) -> Sample:
        h, w, s = self._geometry(sample["video"])
        return {**sample, "video": _crop(sample["video"], _rand_int(h - s), _rand_int(w - s), s, s)}


class ThreeCrop(_SquareCrop):
    """Left/centre/right (or top/centre/bottom for portrait) square crops: V → 3V views."""

    def __call__(self, sample: Sample) -> Sample:
        video = sample["video"]
        h, w, s = self._geometry(video)
        if w >= h:
            boxes = [((h - s) // 2, x) for x in (0, (w - s) // 2, w - s)]
        else:
            boxes = [(y, (w - s) // 2) for y in (0, (h - s) // 2, h - s)]
        crops = torch.stack([_crop(video, t, l, s, s) for t, l in boxes], dim=1)  # (V, 3, T, C, s, s)
        return {**sample, "video": crops.flatten(0, 1)}


class TenCrop(_SquareCrop):
    """The four corner and the centre square crops and their horizontal flips: V → 10V views (the test
    protocol of TSN/TSM in MMAction2). Offsets follow MMAction2's TenCrop: a quarter step q = (side − crop) // 4,
    corners at 0 and 4q, centre at 2q (so a released network sees the pixels its own test saw)."""

    def __call__(self, sample: Sample) -> Sample:
        video = sample["video"]
        h, w, s = self._geometry(video)
        qy, qx = (h - s) // 4, (w - s) // 4
        boxes = [(0, 0), (0, 4 * qx), (4 * qy, 0), (4 * qy, 4 * qx), (2 * qy, 2 * qx)]
        crops = [_crop(video, t, l, s, s) for t, l in boxes]
        crops = torch.stack(crops + [c.flip(-1) for c in crops], dim=1)  # (V, 10, T, C, s, s)
        return {**sample, "video": crops.flatten(0, 1)}


class MultiScaleCrop:
    """TSN multi-scale crop: crop side = base × scale with base the short side, width and
    height scales at most `max_distort` steps apart, position from the 13 fixed offsets
    (`more_fix_crop`) or 5, then resize to `size`×`size`."""

    def __init__(self, size: int, scales: Sequence[float] = (1, 0.875, 0.75, 0.66), max_distort: int = 1,
                 fix_crop: bool = True, more_fix_crop: bool = True):
        self.size = size
        self.scales = tuple(scales)
        self.max_distort = max_distort
        self.fix_crop = fix_crop
        self.more_fix_crop = more_fix_crop

    def _crop_size(self, h: int, w: int) -> tuple[int, int]:
        base = min(h, w)
        sizes = [int(base * s) for s in self.scales]
        sizes = [self.size if abs(s - self.size) < 3 else s for s in sizes]
        pairs = [(ch, cw) for i, ch in enumerate(sizes) for j, cw in enumerate(sizes)
                 if abs(i - j) <= self.max_distort]
        return pairs[_rand_int(len(pairs) - 1)]

    def _offsets(self, h: int, w: int, ch: int, cw: int) -> list[tuple[int, int]]:
        sy, sx = (h - ch) // 4, (w - cw) // 4
        grid = [(0, 0), (0, 4), (4, 0), (4, 4), (2, 2)]
        if self.more_fix_crop:
            grid += [(2, 0), (2, 4), (4, 2), (0, 2), (3, 3), (3, 1), (1, 3), (1, 1)]
        return [(gy * sy, gx * sx) for gy, gx in grid]

    def __call__(self, sample: Sample) -> Sample:
        video = sample["video"]
        h, w = video.shape[-2:]
        ch, cw = self._crop_size(h, w)
        ch, cw = min(ch, h), min(cw, w)
        if self.fix_crop:
            options = self._offsets(h, w, ch, cw)
            top, left = options[_rand_int(len(options) - 1)]
        else:
            top, left = _rand_int(h - ch), _rand_int(w - cw)
        video = _resize(_crop(video, top, left, ch, cw), (self.size, self.size))
        return {**sample, "video": video}


class RandomResizedCrop:
    """Inception-style crop: random area fraction in `scale` and aspect in `ratio`
    (log-uniform), then resize to `size`×`size` (Kinetics recipes)."""

    def __init__(self, size: int, scale: Sequence[float] = (0.08, 1.0),
                 ratio: Sequence[float] = (3 / 4, 4 / 3), attempts: int = 10):
        self.size = size
        self.scale = tuple(scale)
        self.ratio = tuple(ratio)
        self.attempts = attempts

    def __call__(self, sample: Sample) -> Sample:
        video = sample["video"]
        h, w = video.shape[-2:]
        log_r = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(self.attempts):
            area = h * w * float(torch.empty(()).uniform_(*self.scale))
            aspect = math.exp(float(torch.empty(()).uniform_(*log_r)))
            cw, ch = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
            if 0 < cw <= w and 0 < ch <= h:
                top, left = _rand_int(h - ch), _rand_int(w - cw)
                break
        else:  # fall back to a centre crop of the full short side
            ch = cw = min(h, w)
            top, left = (h - ch) // 2, (w - cw) // 2
        video = _resize(_crop(video, top, left, ch, cw), (self.size, self.size))
        return {**sample, "video": video}


class RandomSquareResizedCrop:
    """Square crop of side U(`scale`) × the short side at a uniformly random position, resized to
    `size`×`size` (ST-MANet's training crop [D33]: side U(0.5, 1) × short side → 112²)."""

    def __init__(self, size: int, scale: Sequence[float] = (0.5, 1.0)):
        low, high = (float(v) for v in scale)
        if not 0 < low <= high <= 1:
            raise ValueError(f"RandomSquareResizedCrop scale must satisfy 0 < low ≤ high ≤ 1, got {tuple(scale)}")
        self.size = size
        self.scale = (low, high)

    def box(self, height: int, width: int) -> tuple[int, int, int]:
        """One random draw: (top, left, side) of the square inside a height×width frame."""
        short = min(height, width)
        side = max(1, min(short, round(short * float(torch.empty(()).uniform_(*self.scale)))))
        return _rand_int(height - side), _rand_int(width - side), side

    def __call__(self, sample: Sample) -> Sample:
        top, left, side = self.box(*sample["video"].shape[-2:])
        video = _crop(sample["video"], top, left, side, side)
        return {**sample, "video": _resize(video, (self.size, self.size))}


class HorizontalFlip:
    """Flip with probability `p`. `label_map[i]` is the label after flipping a video of
    class i (Something-Something left/right classes swap); None keeps labels. With
    `swap_left_right` the data module derives the map from the class names."""

    def __init__(self, p: float = 0.5, label_map: Sequence[int] | None = None, swap_left_right: bool = False):
        self.p = p
        self.label_map = list(label_map) if label_map is not None else None
        self.swap_left_right = swap_left_right

    def __call__(self, sample: Sample) -> Sample:
        if self.p <= 0 or float(torch.rand(())) >= self.p:
            return sample
        label = sample["label"]
        if self.label_map is not None and label >= 0:
            label = self.label_map[label]
        return {**sample, "video": sample["video"].flip(-1), "label": label}
