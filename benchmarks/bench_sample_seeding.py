"""Benchmark what reproducible data costs per training sample (issue 22).

Run from the repository root: ``PYTHONPATH=. python benchmarks/bench_sample_seeding.py [--clips N] [--repeats R]``
(about a minute on one core).

On the same clips, in the same process, it times `VideoDataset.__getitem__` with

* ``global``: an integer key — the seed is drawn from torch's global generator (the old path),
* ``keyed`` : an ``(index, draw_seed(seed, epoch, index))`` key, as `SeededShuffle` yields: the seed
  derived from (seed, epoch, index) plus torch's generator saved, seeded and restored around the draws,

and prints the median per-sample time of each and their ratio, plus `draw_seed` alone.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from tempo.data.dataset import VideoDataset
from tempo.data.records import VideoRecord
from tempo.data.resumable import draw_seed
from tempo.data.samplers import SegmentSampler
from tempo.data.transforms import Compose, HorizontalFlip, RandomSquareResizedCrop
from tests.official_fixtures import write_clip


def per_item(dataset: VideoDataset, keys: list, repeats: int) -> float:
    """Median over `repeats` passes of the mean seconds per item."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for key in keys:
            dataset[key]
        times.append((time.perf_counter() - start) / len(keys))
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        records = [VideoRecord(str(write_clip(Path(folder) / f"v{k}.mp4", 0, variant=k, num_frames=32)), 0)
                   for k in range(args.clips)]
        dataset = VideoDataset(records, SegmentSampler(8),
                               Compose([RandomSquareResizedCrop(56), HorizontalFlip(0.5)]), train=True)
        plain = list(range(args.clips))
        keyed = [(i, draw_seed(0, 1, i)) for i in plain]
        per_item(dataset, plain, 1)  # warm-up: codecs, caches
        old, new = per_item(dataset, plain, args.repeats), per_item(dataset, keyed, args.repeats)
        start = time.perf_counter()
        for i in range(10000):
            draw_seed(0, 1, i)
        seed_only = (time.perf_counter() - start) / 10000
    print(f"per sample: global {old * 1e3:.3f} ms  keyed {new * 1e3:.3f} ms  ratio keyed/global {new / old:.3f}")
    print(f"draw_seed alone: {seed_only * 1e6:.1f} µs ({seed_only / old:.1%} of a sample)")


if __name__ == "__main__":
    main()
