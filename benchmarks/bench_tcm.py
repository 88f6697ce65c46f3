"""Benchmark: TCM-R50 vs TSM-R50 training-step time, and the TCM correlation vs a naive ``F.unfold`` one.

Run: ``python benchmarks/bench_tcm.py [--threads N] [--repeats R] [--size S] [--segments T]`` (≈ 1 min on
2 CPU cores at the defaults). In the same process, on the same input:

1. forward+backward step time of TSM-ResNet-50 and TCM-ResNet-50 (one TCM after res3, K=174), batch 1 clip of
   T × 3 × S × S (default 8 × 224²), timed alternately (so a load change on a shared machine hits both) and
   reported as medians and the ratio TCM / TSM (the paper's claim: +1.8 % MACs; target ratio ≤ 1.05);
2. the TCM correlation at the shape it has in that network (2(T−1) frame pairs of 64 channels at
   (S/8)², P = 15): ``CorrelationVolume`` (GEMM per row of displacements) vs the naive unfold baseline of
   ``benchmarks/bench_correlation.py`` (own copy if that file is absent), forward and forward+backward.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F

from tempo.models.backbones.resnet import ResNet
from tempo.models.blocks.correlation import CorrelationVolume
from tempo.models.tcm import TCM
from tempo.models.tsm import TSM

try:  # the correlation benchmark's baseline, when run from benchmarks/ (python benchmarks/bench_tcm.py)
    from bench_correlation import naive_correlation_unfold
except ImportError:  # pragma: no cover - depends on how the script is started
    def naive_correlation_unfold(a: torch.Tensor, b: torch.Tensor, patch_size: int) -> torch.Tensor:
        """Unfold zero-padded B into (M, C, P², H, W) and contract with A over channels."""
        m, c, h, w = a.shape
        r = (patch_size - 1) // 2
        patches = F.unfold(b, kernel_size=patch_size, padding=r).view(m, c, patch_size * patch_size, h, w)
        return (a.unsqueeze(2) * patches).sum(1)


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def alternate(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds of each function, timed in alternation after one untimed warm-up run each."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(timed(fn))
    return {name: statistics.median(t) for name, t in times.items()}


def train_step(model: torch.nn.Module, clip: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        model.zero_grad(set_to_none=True)
        model(clip)["logits"].sum().backward()
    return run


def bench_networks(segments: int, size: int, repeats: int) -> None:
    torch.manual_seed(0)
    backbone = partial(ResNet, depth=50)
    models = {"TSM-R50": TSM(backbone, 174, segments).train(), "TCM-R50": TCM(backbone, 174, segments).train()}
    clip = torch.randn(1, 3, segments, size, size)
    med = alternate({name: train_step(m, clip) for name, m in models.items()}, repeats)
    print(f"\n[1] forward+backward step, batch 1 × {segments} × 3 × {size}², median of {repeats} (alternating)")
    for name, t in med.items():
        print(f"    {name:<8} {t * 1e3:9.1f} ms")
    print(f"    ratio TCM-R50 / TSM-R50 = {med['TCM-R50'] / med['TSM-R50']:.3f}  (target ≤ 1.05)")


def bench_correlation(segments: int, size: int, repeats: int) -> None:
    m, c, hw, p = 2 * (segments - 1), 64, size // 8, 15
    gen = torch.Generator().manual_seed(0)
    a = F.normalize(torch.randn(m, c, hw, hw, generator=gen), dim=1)
    b = F.normalize(torch.randn(m, c, hw, hw, generator=gen), dim=1)
    grad = torch.randn(m, p * p, hw, hw, generator=gen)
    methods = {"CorrelationVolume": CorrelationVolume(p), "naive unfold": partial(naive_correlation_unfold,
                                                                                    patch_size=p)}
    with torch.no_grad():
        diff = (methods["CorrelationVolume"](a, b) - methods["naive unfold"](a, b)).abs().max().item()

    def forward(fn: Callable) -> Callable[[], None]:
        def run() -> None:
            with torch.no_grad():
                fn(a, b)
        return run

    def forward_backward(fn: Callable) -> Callable[[], None]:
        def run() -> None:
            a_, b_ = a.detach().requires_grad_(), b.detach().requires_grad_()
            fn(a_, b_).backward(grad)
        return run

    fwd = alternate({k: forward(fn) for k, fn in methods.items()}, repeats)
    fb = alternate({k: forward_backward(fn) for k, fn in methods.items()}, repeats)
    print(f"\n[2] correlation M={m} C={c} {hw}×{hw} P={p} (max |diff| {diff:.1e}), median of {repeats}")
    print(f"    {'method':<18} {'fwd ms':>9} {'fwd+bwd ms':>11}")
    for name in methods:
        print(f"    {name:<18} {fwd[name] * 1e3:9.1f} {fb[name] * 1e3:11.1f}")
    print(f"    ratio CorrelationVolume / unfold: forward {fwd['CorrelationVolume'] / fwd['naive unfold']:.3f}, "
          f"forward+backward {fb['CorrelationVolume'] / fb['naive unfold']:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per measurement (median)")
    parser.add_argument("--size", type=int, default=224, help="input frame size S (S × S)")
    parser.add_argument("--segments", type=int, default=8, help="frames per clip T")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), CPU")
    bench_networks(args.segments, args.size, args.repeats)
    bench_correlation(args.segments, args.size, max(args.repeats, 5))


if __name__ == "__main__":
    main()
