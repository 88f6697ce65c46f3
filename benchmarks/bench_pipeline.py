"""TSN 8-segment train pipeline throughput: tempo's sources vs a plain decord `get_batch`.

Pipeline per clip: open → sample 8 segments → decode → resize short side 256 → multi-scale crop
224 → flip (tempo's transforms). Videos are encoded here with x264 defaults (preset medium:
B-frames, b-pyramid, keyframe interval 250) at 340×256, 300 frames — Kinetics-like originals —
and converted with `tempo.prepare`'s own converter into each stored format. For every format
the same frames of the same files go through (a) tempo's source for that format and (b) decord's
`VideoReader.get_batch` (what MMAction2's pipeline costs), in the same run; every ratio is
printed: tempo/decord on the same files, and vs decord on the ORIGINAL files (what a peer pays),
with the disk size vs the originals. Also: how much of a prepared clip is opening the file.

`python benchmarks/bench_pipeline.py [--videos 3] [--repeats 2]` (≈ 2 min on 2 busy cores, most of it encoding).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from tempo.data.convert import FORMATS, Job, convert_one
from tempo.data.encode import write_video
from tempo.data.samplers import SegmentSampler
from tempo.data.sources import FrameFolderSource, PyAVSource
from tempo.data.transforms import Compose, HorizontalFlip, MultiScaleCrop, ResizeShortSide

FRAMES, HEIGHT, WIDTH = 300, 256, 340
TRANSFORM = Compose([ResizeShortSide(256), MultiScaleCrop(224), HorizontalFlip(0.5)])


def kinetics_like(seed: int, n: int = FRAMES, h: int = HEIGHT, w: int = WIDTH):
    """A panning smooth texture with moving blobs and sensor noise: motion an encoder predicts
    with P- and B-frames, as in real footage."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (h // 8 + 40, w // 8 + 40, 3), dtype=np.uint8)
    texture = torch.nn.functional.interpolate(torch.from_numpy(small).permute(2, 0, 1)[None].float(),
                                              scale_factor=8, mode="bicubic")[0].permute(1, 2, 0)
    texture = texture.clamp(0, 255).numpy().astype(np.uint8)
    yy, xx = np.mgrid[:h, :w]
    speed = rng.uniform(0.5, 2.0, 2)
    for t in range(n):
        dy, dx = int(t * speed[0]) % 300, int(t * speed[1]) % 300
        frame = texture[dy % (texture.shape[0] - h): dy % (texture.shape[0] - h) + h,
                        dx % (texture.shape[1] - w): dx % (texture.shape[1] - w) + w].copy()
        cy, cx = h / 2 + 60 * np.sin(t / 20 + seed), w / 2 + 100 * np.cos(t / 27 + seed)
        frame[(yy - cy) ** 2 + (xx - cx) ** 2 < 900] = (220, 60 + seed * 30 % 150, 40)
        noise = rng.integers(-1, 2, frame.shape)
        yield np.clip(frame.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def encode_originals(folder: Path, count: int) -> list[Path]:
    return [write_video(folder / f"orig_{i}.mp4", kinetics_like(i), fps=30, preset="medium", quality=23,
                        gop=250) for i in range(count)]


def prepare(originals: list[Path], folder: Path, name: str) -> list[Path]:
    """Convert with tempo.prepare's converter into the stored format `name` (FORMATS or frames)."""
    out = []
    for src in originals:
        frames = name == "jpeg_frames"
        dst = folder / name / (src.stem if frames else src.name)
        dst.parent.mkdir(parents=True, exist_ok=True)
        result = convert_one(Job(str(src), str(dst), 256, frames, None if frames else name, 90,
                                 "{:05d}.jpg", 1, True))
        if not isinstance(result[1], int):
            raise RuntimeError(f"conversion to {name} failed: {result[1]}")
        out.append(dst)
    return out


def disk_size(paths: list[Path]) -> int:
    return sum(sum(f.stat().st_size for f in p.iterdir()) if p.is_dir() else p.stat().st_size for p in paths)


class DecordBatch:
    """The baseline: decord VideoReader (1 thread) + get_batch of the sorted unique frames."""

    def __init__(self, path):
        import decord

        self._reader = decord.VideoReader(str(path), num_threads=1)
        self.num_frames = len(self._reader)

    def read(self, indices):
        return torch.from_numpy(self._reader.get_batch(list(indices)).asnumpy())


def clip(make_source, path, rng: np.random.Generator) -> torch.Tensor:
    """One train clip through the whole pipeline (as VideoDataset.load does)."""
    source = make_source(path)
    frame_ids = SegmentSampler(8).sample(source.num_frames, rng)
    unique, inverse = np.unique(frame_ids, return_inverse=True)
    frames = source.read(unique)[torch.from_numpy(inverse.reshape(frame_ids.shape))]
    return TRANSFORM({"video": frames.permute(0, 1, 4, 2, 3), "label": 0})["video"]


def clips_per_s(sources: dict, paths, repeats: int) -> dict[str, float]:
    """name → clips/s for each source factory in `sources`, interleaved clip by clip (the same
    frames through each; the busy machine's load drifts alike for all), total over `repeats`."""
    spent = dict.fromkeys(sources, 0.0)
    for r in range(repeats):
        for i, path in enumerate(paths):
            names = list(sources) if (r + i) % 2 == 0 else list(reversed(sources))
            for name in names:
                torch.manual_seed(r)
                start = time.perf_counter()
                clip(sources[name], path, np.random.default_rng(1000 * r + i))
                spent[name] += time.perf_counter() - start
    return {name: repeats * len(paths) / t for name, t in spent.items()}


def open_fraction(make_source, paths, repeats: int = 3) -> float:
    """Share of a clip's decode time spent constructing the reader (container index, packets)."""
    opened, total = 0.0, 0.0
    for _ in range(repeats):
        for i, path in enumerate(paths):
            start = time.perf_counter()
            source = make_source(path)
            mid = time.perf_counter()
            source.read(np.unique(SegmentSampler(8).sample(source.num_frames, np.random.default_rng(i))))
            opened, total = opened + mid - start, total + time.perf_counter() - start
    return opened / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)  # one DataLoader worker's view
    sys.stdout.reconfigure(line_buffering=True)  # progress shows under `make bench` pipes too
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        originals = encode_originals(tmp, args.videos)
        stored = {"original (x264 defaults)": originals}
        for name in (*FORMATS, "jpeg_frames"):
            stored[name] = prepare(originals, tmp, name)
        print(f"encoded {args.videos} videos {WIDTH}x{HEIGHT}x{FRAMES} and converted them "
              f"({time.perf_counter() - t0:.0f} s)")
        base_size = disk_size(originals)
        rows, base_rate = [], None
        for name, paths in stored.items():
            frames = name == "jpeg_frames"
            sources = {"tempo": FrameFolderSource if frames else PyAVSource}
            if not frames:
                sources["decord"] = DecordBatch
            rate = clips_per_s(sources, paths, args.repeats)
            base_rate = base_rate or rate["decord"]  # decord on the originals: the peers' cost
            rows.append((name, rate, disk_size(paths) / base_size, open_fraction(sources["tempo"], paths)))
        print(f"\ndecord get_batch on the original files: {base_rate:.1f} clips/s (the peers' cost)\n")
        print(f"{'stored as':<26} {'tempo clips/s':>13} {'decord clips/s':>14} {'tempo/decord':>12} "
              f"{'vs orig decord':>14} {'disk vs orig':>12} {'per byte':>9} {'open share':>10}")
        for name, rate, size, opening in rows:
            tempo, decord = rate["tempo"], rate.get("decord", float("nan"))
            print(f"{name:<26} {tempo:13.1f} {decord:14.1f} {tempo / decord:11.2f}× {tempo / base_rate:13.2f}× "
                  f"{size:11.2f}× {tempo / base_rate / size:8.2f} {opening:9.0%}")
        print("\n(tempo/decord: same files, same frames; vs orig decord: against decord on the original files; "
              "per byte: speed-up over the originals per unit of disk; open share: reader construction "
              "share of decode time)")


if __name__ == "__main__":
    main()
