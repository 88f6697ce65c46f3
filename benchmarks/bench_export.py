"""Benchmark: per-clip CPU latency of the exported formats vs eager PyTorch, TSM-R50 and TCM-R50.

Run: ``python benchmarks/bench_export.py [--threads N] [--repeats R] [--size S] [--segments T] [--models tsm,tcm]``
(several minutes on 2 CPU cores at the defaults: the exports dominate). For each model (the real configs,
`model=tsm|tcm backbone=resnet50`, 174 classes, random weights), in one process: export to ONNX,
TorchScript and torch.export (`tempo.run.export`, each parity checked), then time one clip (batch 1,
T × 3 × S × S, default 8 × 224²) through eager PyTorch (eval, no_grad) and through each format (ONNX through
onnxruntime on CPU with the same thread count), in alternation so a load change on a shared machine hits all
of them, and print medians and the ratio to eager.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from tempo import CONF_DIR
from tempo.run.export import FORMATS, ClipClassifier, export_and_check, load_exported, random_clip
from tempo.run.module import IMAGENET_MEAN, IMAGENET_STD


def build(model: str, segments: int, size: int) -> ClipClassifier:
    with initialize_config_dir(config_dir=str(Path(CONF_DIR).resolve()), version_base="1.3"):
        cfg = compose("train", overrides=[f"model={model}", "backbone=resnet50", f"dataset.num_segments={segments}",
                                          f"dataset.input_size={size}", "dataset.num_classes=174"])
    torch.manual_seed(0)
    network = instantiate(cfg.model.network)
    return ClipClassifier(network, torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD), False).eval()


def median_latency(runners: dict, clip: torch.Tensor, repeats: int) -> dict[str, float]:
    """Median seconds per clip of each runner, timed in alternation after one untimed warm-up each."""
    times = {name: [] for name in runners}
    with torch.no_grad():
        for run in runners.values():
            run(clip)
        for _ in range(repeats):
            for name, run in runners.items():
                start = time.perf_counter()
                run(clip)
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # 1: two OpenMP threads on a loaded 2-core machine spin-wait for each other (measured 15× slower)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--segments", type=int, default=8)
    parser.add_argument("--models", default="tsm,tcm")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    shape = [3, args.segments, args.size, args.size]
    clip = random_clip(shape, False, 1, seed=2)
    print(f"per-clip CPU latency, batch 1, {args.segments}×{args.size}², {args.threads} threads, "
          f"median of {args.repeats} (torch {torch.__version__})")
    print(f"{'model':<10s} {'format':<14s} {'ms / clip':>10s} {'vs eager':>9s} {'parity':>9s}")
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models.split(","):
            model = build(name, args.segments, args.size)
            runners, parity = {"eager": model}, {"eager": 0.0}
            for fmt, suffix in FORMATS.items():
                path = Path(folder) / f"{name}{suffix}"
                start = time.perf_counter()
                parity[fmt] = export_and_check(model, fmt, path, {}, 1e-4, shape)
                print(f"  exported {name} to {fmt} in {time.perf_counter() - start:.0f} s", file=sys.stderr)
                runners[fmt] = load_exported(path, fmt, threads=args.threads)
            latency = median_latency(runners, clip, args.repeats)
            for fmt, seconds in latency.items():
                print(f"{name + '-R50':<10s} {fmt:<14s} {1000 * seconds:>10.0f} {seconds / latency['eager']:>8.2f}× "
                      f"{parity[fmt]:>9.1e}")


if __name__ == "__main__":
    main()
