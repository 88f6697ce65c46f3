"""TSN 8-segment train pipeline throughput: tempo's sources vs a plain decord `get_batch`.

Pipeline per clip: open → sample 8 segments → decode → resize short side 256 → multi-scale crop
224 → flip (tempo's transforms). Videos are encoded here with x264 defaults (preset medium:
B-frames, b-pyramid, keyframe interval 250) at 340×256, 300 frames — Kinetics-like originals
(see `kinetics_like`) — or taken from a folder of real videos (`--videos-from`), and converted
with `tempo.prepare`'s own converter into each stored format. For every format the same frames of
the same files go through tempo's source and decord's `VideoReader.get_batch` (what MMAction2's
pipeline costs), interleaved clip by clip in the same run. tempo is timed twice: without a stored
packet index (a video's first epoch) and with one (every later epoch; `tempo.prepare` stores it
when it converts). Printed per format: clips/s, tempo/decord on the same files, the speed-up over
decord on the ORIGINAL files (what a peer pays), disk size vs the originals, speed-up per unit of
disk, PSNR against the original frames, and the share of a clip's decode time spent opening; then
whether `format=fast` meets issue 24's goal, and the frontier: for each PSNR floor (34, 36, 38 dB) the
fastest format within 2× and 3× the originals' disk.

`python benchmarks/bench_pipeline.py [--videos 3] [--repeats 2] [--videos-from DIR] [--formats a,b]`
(≈ 5 min for every format on an idle 2-core machine; `--formats` measures fewer).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch

from tempo.data.convert import Job, convert_one
from tempo.data.encode import write_video
from tempo.data.formats import FAST_FORMAT, FORMATS, psnr, squared_error
from tempo.data.kinetics_like import FRAMES, HEIGHT, WIDTH, kinetics_like
from tempo.data.samplers import SegmentSampler
from tempo.data.sources import FrameFolderSource, PyAVSource
from tempo.data.transforms import Compose, HorizontalFlip, MultiScaleCrop, ResizeShortSide

TRANSFORM = Compose([ResizeShortSide(256), MultiScaleCrop(224), HorizontalFlip(0.5)])
TARGET_ORIGINAL = 1.5  # issue 11
TARGET_SPEED, TARGET_DISK, TARGET_PSNR = 10.0, 2.0, 36.0  # issue 24: the default prepared format
FLOORS, DISK_CAPS = (34.0, 36.0, 38.0), (2.0, 3.0)  # the frontier printed


def encode_originals(folder: Path, count: int) -> list[Path]:
    return [write_video(folder / f"orig_{i}.mp4", kinetics_like(i), fps=30, preset="medium", quality=23,
                        gop=250) for i in range(count)]


def prepare(originals: list[Path], folder: Path, name: str, index_dir: Path) -> list[Path]:
    """Convert with tempo.prepare's converter into the stored format `name` (FORMATS or frames);
    as `tempo.prepare` does, store each video's packet index."""
    out = []
    for src in originals:
        frames = name == "jpeg_frames"
        dst = folder / name / src.name  # a folder for frames (clip.mp4 and clip.avi stay apart)
        dst.parent.mkdir(parents=True, exist_ok=True)
        result = convert_one(Job(str(src), str(dst), 256, frames, None if frames else name, 90,
                                 "{:05d}.jpg", 1, True, str(index_dir)))
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
    """Share of a clip's decode time spent constructing the reader (container, packet index)."""
    opened, total = 0.0, 0.0
    for _ in range(repeats):
        for i, path in enumerate(paths):
            start = time.perf_counter()
            source = make_source(path)
            mid = time.perf_counter()
            source.read(np.unique(SegmentSampler(8).sample(source.num_frames, np.random.default_rng(i))))
            opened, total = opened + mid - start, total + time.perf_counter() - start
    return opened / total


def mean_psnr(originals: list[Path], stored: list[Path], make_source, every: int = 10) -> float:
    """Mean PSNR (dB) of every `every`-th stored frame against the original frame resized to the stored
    size as the converter resizes it (pooled squared error over the videos)."""
    errors = []
    for original, path in zip(originals, stored, strict=True):
        source = make_source(path)
        ids = list(range(0, min(PyAVSource(original).num_frames, source.num_frames), every))
        errors.append(squared_error(original, source.read(ids).numpy(), ids))
    return psnr(float(np.mean(errors)))


def measure(stored: dict[str, list[Path]], index_dir: Path, repeats: int) -> list[tuple]:
    originals, rows = stored["original"], []
    for name, paths in stored.items():
        if name == "jpeg_frames":
            sources = {"warm": FrameFolderSource}
        else:
            sources = {"cold": PyAVSource, "warm": lambda p: PyAVSource(p, index_dir=index_dir),
                       "decord": DecordBatch}
            for path in paths:  # as after one epoch (or tempo.prepare): the index is stored
                PyAVSource(path, index_dir=index_dir).close()
        rate = clips_per_s(sources, paths, repeats)
        quality = mean_psnr(originals, paths, sources["warm"]) if name != "original" else float("inf")
        rows.append((name, rate, disk_size(paths) / disk_size(originals), quality,
                     open_fraction(sources["warm"], paths)))
    return rows


def report(rows: list[tuple]) -> None:
    base = rows[0][1]["decord"]  # decord on the original files: the peers' cost
    print(f"\ndecord get_batch on the original files: {base:.1f} clips/s (the peers' cost)\n")
    print(f"{'stored as':<24} {'tempo clips/s':>13} {'1st epoch':>9} {'decord':>7} {'tempo/decord':>12} "
          f"{'vs orig decord':>14} {'disk':>6} {'per byte':>8} {'PSNR dB':>7} {'open share':>10}")
    for name, rate, size, quality, opening in rows:
        label = f"{name} (format=fast)" if name == FAST_FORMAT else name
        warm, cold, decord = rate["warm"], rate.get("cold", float("nan")), rate.get("decord", float("nan"))
        print(f"{label:<24} {warm:13.1f} {cold:9.1f} {decord:7.1f} {warm / decord:11.2f}× {warm / base:13.2f}× "
              f"{size:5.2f}× {warm / base / size:8.2f} {quality:7.1f} {opening:9.0%}")
    print("\n(tempo clips/s: with the stored packet index, as every epoch after the first and every epoch of "
          "tempo.prepare's output; 1st epoch: building the index as well; decord: same files, same frames; "
          "vs orig decord: against decord on the original files; per byte: that speed-up over the disk "
          "ratio; open share: opening the source, share of decode time)")
    figures = {name: (rate["warm"] / base, size, quality) for name, rate, size, quality, _ in rows}
    original = figures["original"][0]
    print(f"\ntarget original files ≥ {TARGET_ORIGINAL}×: {original:.2f}× "
          f"({'met' if original >= TARGET_ORIGINAL else 'MISSED'})")
    if FAST_FORMAT in figures:
        speed, disk, quality = figures[FAST_FORMAT]
        met = speed >= TARGET_SPEED and disk <= TARGET_DISK and quality >= TARGET_PSNR
        print(f"goal of format=fast ({FAST_FORMAT}): ≥ {TARGET_SPEED:.0f}× at ≤ {TARGET_DISK:.0f}× disk and ≥ "
              f"{TARGET_PSNR:.0f} dB: {speed:.1f}× at {disk:.2f}× and {quality:.1f} dB "
              f"({'met' if met else 'MISSED'})")
    frontier(figures)


def frontier(figures: dict[str, tuple[float, float, float]]) -> None:
    """For each PSNR floor and disk cap: the fastest stored format that keeps both."""
    print(f"\nfrontier: the fastest format (× decord on the originals) with PSNR ≥ floor\n{'PSNR floor':<11}"
          + "".join(f"{f'within {cap:.0f}× disk':>28}" for cap in DISK_CAPS))
    for floor in FLOORS:
        cells = []
        for cap in DISK_CAPS:
            kept = {n: v for n, v in figures.items() if n != "original" and v[1] <= cap and v[2] >= floor}
            best = max(kept, key=lambda n: kept[n][0]) if kept else None
            cells.append(f"{best} {kept[best][0]:.1f}× {kept[best][1]:.2f}×" if best else "none")
        print(f"{floor:>7.0f} dB" + "".join(f"{c:>28}" for c in cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--videos-from", type=Path, help="time these real videos instead of encoding some")
    parser.add_argument("--formats", default=",".join([*FORMATS, "jpeg_frames"]),
                        help="comma-separated stored formats to measure (default: all, and JPEG folders)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # one DataLoader worker's view
    sys.stdout.reconfigure(line_buffering=True)  # progress shows under `make bench` pipes too
    av.logging.set_level(av.logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        if args.videos_from:
            originals = sorted(p for p in args.videos_from.iterdir() if p.suffix in (".mp4", ".mkv", ".webm", ".avi"))
        else:
            originals = encode_originals(tmp, args.videos)
        stored = {"original": originals}
        for name in args.formats.split(","):
            stored[name] = prepare(originals, tmp, name, tmp / "packet_index")
        what = f"{len(originals)} videos from {args.videos_from}" if args.videos_from else \
            f"encoded {args.videos} videos {WIDTH}x{HEIGHT}x{FRAMES}"
        print(f"{what}, converted them ({time.perf_counter() - t0:.0f} s)")
        report(measure(stored, tmp / "packet_index", args.repeats))


if __name__ == "__main__":
    main()
