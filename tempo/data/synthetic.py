"""The synthetic "tempo" dataset: real encoded mp4 clips where only motion tells classes apart.

Each clip shows one shape (random kind, size, colour and start position) moving in one
of four directions at one of two speeds over a noisy background with static
distractors: 8 classes. Any single frame is compatible with every class, so a model
must relate frames in time (TSM can, TSN's frame averaging mostly cannot).
Generated once, deterministically from the seed, into a cache folder; the annotation
lists use the generic `<relpath> <label>` format.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from tempo.data.encode import write_video
from tempo.data.records import ParsedSplit, read_list

log = logging.getLogger(__name__)

DIRECTIONS = {"right": (0, 1), "left": (0, -1), "down": (1, 0), "up": (-1, 0)}
SPEEDS = {"slowly": 1.0, "fast": 2.5}
CLASS_NAMES = [f"moving {d} {s}" for d in DIRECTIONS for s in SPEEDS]


def default_cache_dir() -> Path:
    if os.environ.get("TEMPO_CACHE_DIR"):
        return Path(os.environ["TEMPO_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tempo"


@dataclass(frozen=True)
class SyntheticSpec:
    train_per_class: int = 64
    val_per_class: int = 16
    num_frames: int = 16
    size: int = 64
    fps: int = 12
    seed: int = 0

    def key(self) -> str:
        return hashlib.sha1(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:10]


def _shape_mask(kind: str, size: int) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    if kind == "disc":
        return (yy**2 + xx**2) <= (size / 2) ** 2
    if kind == "diamond":
        return (np.abs(yy) + np.abs(xx)) <= size / 2
    return np.ones((size, size), bool)


def render_clip(label: int, spec: SyntheticSpec, rng: np.random.Generator) -> np.ndarray:
    """(T, H, W, 3) uint8 frames of one clip of class `label`."""
    direction, speed = list(DIRECTIONS)[label // len(SPEEDS)], list(SPEEDS)[label % len(SPEEDS)]
    dy, dx = DIRECTIONS[direction]
    step = SPEEDS[speed] * rng.uniform(0.85, 1.15)
    t, s = spec.num_frames, spec.size
    obj = int(rng.integers(8, 14))
    mask = _shape_mask(str(rng.choice(["square", "disc", "diamond"])), obj)
    colour = rng.integers(60, 256, 3)
    travel = step * (t - 1)
    # start so the whole path stays inside the frame; the free axis is uniform
    lo_along, hi_along = 0.0, s - obj - travel
    along0 = rng.uniform(lo_along, max(hi_along, lo_along))
    across = rng.uniform(0, s - obj)
    background = rng.integers(0, 70, (s, s, 3))
    distractors = [(rng.integers(0, s - 6, 2), rng.integers(40, 200, 3)) for _ in range(2)]
    frames = np.empty((t, s, s, 3), np.uint8)
    for k in range(t):
        img = background + rng.integers(-12, 13, (s, s, 3))
        for (py, px), col in distractors:
            img[py : py + 6, px : px + 6] = col
        along = along0 + step * k
        if dy + dx < 0:  # moving up/left: run the path backwards
            along = along0 + travel - step * k
        y, x = (along, across) if dy else (across, along)
        y, x = (min(max(int(round(v)), 0), s - obj) for v in (y, x))
        img[y : y + obj, x : x + obj][mask] = colour
        frames[k] = np.clip(img, 0, 255)
    return frames


def generate(root: Path, spec: SyntheticSpec) -> None:
    """Write videos/, train.txt, val.txt, classes.txt under `root` (atomically)."""
    tmp = root.with_name(root.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    rng = np.random.default_rng(spec.seed)
    for subset, per_class in (("train", spec.train_per_class), ("val", spec.val_per_class)):
        lines = []
        for label in range(len(CLASS_NAMES)):
            for i in range(per_class):
                rel = f"videos/{subset}/{label}_{i:04d}.mp4"
                write_video(tmp / rel, render_clip(label, spec, rng), fps=spec.fps, gop=spec.num_frames)
                lines.append(f"{rel} {label}\n")
        order = rng.permutation(len(lines))
        (tmp / f"{subset}.txt").write_text("".join(lines[i] for i in order))
    (tmp / "classes.txt").write_text("".join(n + "\n" for n in CLASS_NAMES))
    (tmp / "spec.json").write_text(json.dumps(asdict(spec), indent=1))
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)


class SyntheticVideos:
    """Reader for the synthetic dataset: generates it on first use, then reads its lists.

    Calling it with a subset ("train", "val"; "test" = "val") returns a `ParsedSplit`.
    """

    def __init__(self, cache_dir: str | None = None, **spec):
        self.spec = SyntheticSpec(**spec)
        base = Path(cache_dir) if cache_dir else default_cache_dir()
        self.root = base / "synthetic" / self.spec.key()

    def prepare(self) -> Path:
        if not (self.root / "spec.json").exists():
            n = (self.spec.train_per_class + self.spec.val_per_class) * len(CLASS_NAMES)
            log.info("generating the synthetic dataset (%d mp4 clips) in %s", n, self.root)
            self.root.parent.mkdir(parents=True, exist_ok=True)
            generate(self.root, self.spec)
        return self.root

    def __call__(self, subset: str) -> ParsedSplit:
        root = self.prepare()
        name = "train" if subset == "train" else "val"
        return ParsedSplit(read_list(root / f"{name}.txt", root=root), list(CLASS_NAMES))
