"""Clip decoding throughput: decord vs tempo's default PyAV source (sparse decoding), same files, same run.

Prints clips/s for each backend and the ratio PyAV/decord time. Uses videos it encodes
itself (the synthetic generator's content at 128×128 and 224×224, 64 frames). Then the same for
UCF-101-style AVIs (MPEG-4 part 2, packed B-frames), which both backends read in decoder output
order (`tempo.data.stream_checks`), against PyAV's plain sequential decode (`sparse=False`).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from tempo.data.encode import write_packed_bframes_avi, write_video
from tempo.data.samplers import SegmentSampler
from tempo.data.sources import DecordSource, PyAVSource
from tempo.data.synthetic import SyntheticSpec, render_clip


def time_reads(make_source, paths, sampler, repeats=3) -> float:
    rng = np.random.default_rng(0)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for p in paths:
            src = make_source(p)
            src.read(np.unique(sampler.sample(src.num_frames, rng)))
        times.append(time.perf_counter() - start)
    return statistics.median(times) / len(paths)


def main() -> None:
    sampler = SegmentSampler(8)
    print(f"{'video':>14} {'decord ms/clip':>15} {'pyav ms/clip':>13} {'pyav/decord':>12}")
    with tempfile.TemporaryDirectory() as tmp:
        for size in (128, 224):
            spec = SyntheticSpec(num_frames=64, size=size)
            rng = np.random.default_rng(0)
            paths = [write_video(Path(tmp) / f"{size}_{i}.mp4", render_clip(i % 8, spec, rng), gop=16)
                     for i in range(8)]
            t_decord = time_reads(DecordSource, paths, sampler)
            t_pyav = time_reads(PyAVSource, paths, sampler)
            print(f"{f'64×{size}²':>14} {t_decord * 1e3:15.2f} {t_pyav * 1e3:13.2f} {t_pyav / t_decord:12.2f}")
        print(f"\n{'packed AVI':>14} {'sequential ms':>15} {'pyav ms/clip':>13} {'pyav/seq':>9} {'decord ms':>10}")
        for gop in (16, 300):
            spec = SyntheticSpec(num_frames=64, size=224)
            rng = np.random.default_rng(0)
            paths = [write_packed_bframes_avi(Path(tmp) / f"gop{gop}_{i}.avi", render_clip(i % 8, spec, rng), gop=gop)
                     for i in range(8)]
            t_seq = time_reads(lambda p: PyAVSource(p, sparse=False), paths, sampler)
            t_pyav = time_reads(PyAVSource, paths, sampler)
            t_decord = time_reads(DecordSource, paths, sampler)
            print(f"{f'GOP {gop}':>14} {t_seq * 1e3:15.2f} {t_pyav * 1e3:13.2f} {t_pyav / t_seq:9.2f} "
                  f"{t_decord * 1e3:10.2f}")


if __name__ == "__main__":
    main()
