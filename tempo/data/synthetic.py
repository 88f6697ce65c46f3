"""The synthetic "tempo" dataset: real encoded mp4 clips where only motion tells classes apart.

``variant="default"``: each clip shows one shape (random kind, size 8–13 px, colour and start position)
moving in one of four directions at one of two speeds over a noisy background with static distractors:
8 classes. Any single frame is compatible with every class, so a model must relate frames in time (TSM
can, TSN's frame averaging mostly cannot). TSM and TCM both saturate near 95 % on it.

``variant="hard"``: 12 classes, 4 directions × {slowly, fast, and back} ("moving right and back" goes
right for half the clip, then returns), and the nuisances that make motion estimation hard: a smaller
object (5–9 px), a camera that pans over a textured background (the distractors move with it, up to
1 px/frame on each axis), and in half the clips a static occluding bar. Class motion is the object's
motion in the frame; "X and back" and the opposite direction's "and back" are time reverses of each
other, so order matters even more than in the default set.

Generated once, deterministically from the seed, into a cache folder; the annotation lists use the
generic `<relpath> <label>` format.
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

from tempo.data.cache import default_cache_dir
from tempo.data.encode import write_video
from tempo.data.records import ParsedSplit, read_list

log = logging.getLogger(__name__)

DIRECTIONS = {"right": (0, 1), "left": (0, -1), "down": (1, 0), "up": (-1, 0)}
#: Per variant: manner of motion → speed in px/frame ("and back": out at that speed, then back).
MANNERS = {"default": {"slowly": 1.0, "fast": 2.5},
           "hard": {"slowly": 1.0, "fast": 2.5, "and back": 2.0}}
VARIANTS = tuple(MANNERS)


def class_names(variant: str = "default") -> list[str]:
    """The ordered class names of a variant: direction-major, e.g. "moving right slowly", "moving right fast"."""
    check_variant(variant)
    return [f"moving {d} {m}" for d in DIRECTIONS for m in MANNERS[variant]]


def check_variant(variant: str) -> None:
    if variant not in MANNERS:
        raise ValueError(f"dataset.variant must be one of {list(VARIANTS)} (synthetic set), got {variant!r}")


@dataclass(frozen=True)
class SyntheticSpec:
    train_per_class: int = 64
    val_per_class: int = 16
    num_frames: int = 16
    size: int = 64
    fps: int = 12
    seed: int = 0
    variant: str = "default"

    def __post_init__(self) -> None:
        check_variant(self.variant)

    def key(self) -> str:
        fields = asdict(self)
        if fields["variant"] == "default":  # the hash of the sets generated before variants existed
            del fields["variant"]
        return hashlib.sha1(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:10]


def _shape_mask(kind: str, size: int) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    if kind == "disc":
        return (yy**2 + xx**2) <= (size / 2) ** 2
    if kind == "diamond":
        return (np.abs(yy) + np.abs(xx)) <= size / 2
    return np.ones((size, size), bool)


def render_clip(label: int, spec: SyntheticSpec, rng: np.random.Generator) -> np.ndarray:
    """(T, H, W, 3) uint8 frames of one clip of class `label`."""
    if spec.variant == "hard":
        return render_hard_clip(label, spec, rng)
    speeds = MANNERS["default"]
    direction, speed = list(DIRECTIONS)[label // len(speeds)], list(speeds)[label % len(speeds)]
    dy, dx = DIRECTIONS[direction]
    step = speeds[speed] * rng.uniform(0.85, 1.15)
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


def _path_offsets(manner: str, step: float, t: int) -> np.ndarray:
    """Signed distance travelled along the direction at each frame: straight, or out and back."""
    k = np.arange(t, dtype=float)
    if manner != "and back":
        return step * k
    turn = (t - 1) / 2
    return step * (turn - np.abs(k - turn))


def _textured_background(size: int, rng: np.random.Generator) -> np.ndarray:
    """(size, size, 3) smooth random texture (blocky noise upsampled ×4) that shows where the camera pans."""
    coarse = rng.integers(0, 90, (size // 4 + 1, size // 4 + 1, 3))
    return np.kron(coarse, np.ones((4, 4, 1), dtype=coarse.dtype))[:size, :size]


def render_hard_clip(label: int, spec: SyntheticSpec, rng: np.random.Generator) -> np.ndarray:
    """(T, H, W, 3) uint8 frames of one clip of the hard variant (see the module docstring)."""
    manners = MANNERS["hard"]
    direction, manner = list(DIRECTIONS)[label // len(manners)], list(manners)[label % len(manners)]
    dy, dx = DIRECTIONS[direction]
    t, s = spec.num_frames, spec.size
    offsets = _path_offsets(manner, manners[manner] * rng.uniform(0.85, 1.15), t)
    obj = int(rng.integers(5, 10))
    mask = _shape_mask(str(rng.choice(["square", "disc", "diamond"])), obj)
    colour = rng.integers(90, 256, 3)
    along0 = rng.uniform(0, max(s - obj - offsets.max(), 0))
    across = rng.uniform(0, s - obj)
    pan = rng.uniform(-1.0, 1.0, 2)  # camera velocity (y, x) in px/frame
    margin = int(np.ceil(np.abs(pan).max() * (t - 1))) + 1
    world = _textured_background(s + 2 * margin, rng)
    for _ in range(3):  # distractors live in the world: they move with the background
        py, px = rng.integers(0, s + 2 * margin - 6, 2)
        world[py : py + 6, px : px + 6] = rng.integers(40, 200, 3)
    occluder = None
    if rng.random() < 0.5:  # a static bar across the frame, in front of the object
        start, width = int(rng.integers(8, s - 14)), int(rng.integers(4, 8))
        occluder = (bool(rng.random() < 0.5), start, width, rng.integers(100, 180, 3))
    frames = np.empty((t, s, s, 3), np.uint8)
    for k in range(t):
        oy, ox = (int(round(margin + pan[i] * k)) for i in range(2))
        img = world[oy : oy + s, ox : ox + s] + rng.integers(-12, 13, (s, s, 3))
        along = along0 + offsets[k] if dy + dx > 0 else along0 + offsets.max() - offsets[k]
        y, x = (along, across) if dy else (across, along)
        y, x = (min(max(int(round(v)), 0), s - obj) for v in (y, x))
        img[y : y + obj, x : x + obj][mask] = colour
        if occluder is not None:
            vertical, start, width, col = occluder
            if vertical:
                img[:, start : start + width] = col
            else:
                img[start : start + width, :] = col
        frames[k] = np.clip(img, 0, 255)
    return frames


def generate(root: Path, spec: SyntheticSpec) -> None:
    """Write videos/, train.txt, val.txt, classes.txt under `root` (atomically).

    Each process writes its own partial folder and renames it into place, so processes generating the
    same set at once (pytest-xdist workers, DDP ranks sharing $TEMPO_CACHE_DIR) never write into one
    another's files; the first to finish wins and the others keep its (identical) result.
    """
    tmp = root.with_name(f"{root.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    rng = np.random.default_rng(spec.seed)
    names = class_names(spec.variant)
    for subset, per_class in (("train", spec.train_per_class), ("val", spec.val_per_class)):
        lines = []
        for label in range(len(names)):
            for i in range(per_class):
                rel = f"videos/{subset}/{label}_{i:04d}.mp4"
                write_video(tmp / rel, render_clip(label, spec, rng), fps=spec.fps, gop=spec.num_frames)
                lines.append(f"{rel} {label}\n")
        order = rng.permutation(len(lines))
        (tmp / f"{subset}.txt").write_text("".join(lines[i] for i in order))
    (tmp / "classes.txt").write_text("".join(n + "\n" for n in names))
    (tmp / "spec.json").write_text(json.dumps(asdict(spec), indent=1))
    if root.exists() and not (root / "spec.json").exists():  # a left-over without its spec: incomplete
        shutil.rmtree(root, ignore_errors=True)
    try:
        tmp.rename(root)
    except OSError:  # renaming onto a non-empty folder: another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
        if not (root / "spec.json").exists():
            raise


class SyntheticVideos:
    """Reader for the synthetic dataset: generates it on first use, then reads its lists.

    Calling it with a subset ("train", "val"; "test" = "val") returns a `ParsedSplit`.
    """

    def __init__(self, cache_dir: str | None = None, **spec):
        self.spec = SyntheticSpec(**spec)
        base = Path(cache_dir) if cache_dir else default_cache_dir()  # the same default as paths.cache_dir
        self.root = base / "synthetic" / self.spec.key()

    def prepare(self) -> Path:
        if not (self.root / "spec.json").exists():
            n = (self.spec.train_per_class + self.spec.val_per_class) * len(self.class_names)
            log.info("generating the synthetic dataset (%d mp4 clips) in %s", n, self.root)
            self.root.parent.mkdir(parents=True, exist_ok=True)
            generate(self.root, self.spec)
        return self.root

    def __call__(self, subset: str) -> ParsedSplit:
        root = self.prepare()
        name = "train" if subset == "train" else "val"
        return ParsedSplit(read_list(root / f"{name}.txt", root=root), self.class_names)

    @property
    def class_names(self) -> list[str]:
        return class_names(self.spec.variant)
