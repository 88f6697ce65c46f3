"""Benchmark the TCM correlation (spec B3): CorrelationVolume vs a naive F.unfold implementation.

Run: ``python benchmarks/bench_correlation.py [--threads N] [--repeats R]`` (about 30 s on one core).

For each case, on the same inputs in the same process, it times forward and forward+backward of

* ``rows``   : ``CorrelationVolume`` (default, one batched GEMM per row of displacements),
* ``loop``   : ``CorrelationVolume(method="loop")`` (the spec's shifted-slice loop),
* ``unfold`` : ``naive_correlation_unfold`` (unfold B over the whole batch: (M, C·P², H·W)),

checks that all three agree, and prints median times, ratios to the naive baseline and an analytic
estimate of the extra memory each method allocates in its forward (the largest temporaries).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tempo.models.blocks.correlation import CorrelationVolume

MB = 2**20


def naive_correlation_unfold(a: torch.Tensor, b: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Reference/baseline: unfold zero-padded B into (M, C, P², H, W) and contract with A over C.

    Same semantics as CorrelationVolume (channel k = i·P + j ↔ (dy, dx) = (i − R, j − R)); memory-hungry,
    which is exactly what spec B3 warns against.
    """
    m, c, h, w = a.shape
    r = (patch_size - 1) // 2
    patches = F.unfold(b, kernel_size=patch_size, padding=r).view(m, c, patch_size * patch_size, h, w)
    return (a.unsqueeze(2) * patches).sum(1)


@dataclass(frozen=True)
class Case:
    m: int
    c: int
    h: int
    w: int
    p: int

    def __str__(self) -> str:
        return f"M={self.m} C={self.c} {self.h}x{self.w} P={self.p}"


def extra_forward_bytes(method: str, case: Case) -> int:
    """Analytic size of the forward's main temporaries (float32), output included."""
    m, c, h, w, p = case.m, case.c, case.h, case.w, case.p
    r = (p - 1) // 2
    out = m * p * p * h * w
    padded_b = m * c * (h + 2 * r) * (w + 2 * r)
    if method == "unfold":
        return 4 * (2 * m * c * p * p * h * w + padded_b + out)  # unfolded B + product before the sum
    if method == "loop":
        return 4 * (padded_b + m * c * h * w + out)  # one (M, C, H, W) product at a time
    return 4 * (m * c * h * w + padded_b + m * h * w * (w + 2 * r) + out)  # permuted A, B, Gram buffer


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def forward_backward(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], a: torch.Tensor,
                     b: torch.Tensor, grad: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        a_ = a.detach().requires_grad_()
        b_ = b.detach().requires_grad_()
        fn(a_, b_).backward(grad)
    return run


def forward_only(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], a: torch.Tensor,
                 b: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        with torch.no_grad():
            fn(a, b)
    return run


def methods(p: int) -> dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]:
    return {
        "rows": CorrelationVolume(p),
        "loop": CorrelationVolume(p, method="loop"),
        "unfold": lambda a, b: naive_correlation_unfold(a, b, p),
    }


def max_grad_diff(fn: Callable, ref: Callable, a: torch.Tensor, b: torch.Tensor, grad: torch.Tensor) -> float:
    diffs = []
    for f in (fn, ref):
        a_ = a.detach().requires_grad_()
        b_ = b.detach().requires_grad_()
        f(a_, b_).backward(grad)
        diffs.append(torch.cat([a_.grad.flatten(), b_.grad.flatten()]))
    return (diffs[0] - diffs[1]).abs().max().item()


def bench_case(case: Case, repeats: int) -> list[str]:
    gen = torch.Generator().manual_seed(0)
    # L2-normalised over channels like the MTDM, so values are cosines in [−1, 1].
    a = F.normalize(torch.randn(case.m, case.c, case.h, case.w, generator=gen), dim=1)
    b = F.normalize(torch.randn(case.m, case.c, case.h, case.w, generator=gen), dim=1)
    grad = torch.randn(case.m, case.p * case.p, case.h, case.w, generator=gen)
    fns = methods(case.p)
    with torch.no_grad():
        reference = fns["unfold"](a, b)
    results = {}
    for name, fn in fns.items():
        with torch.no_grad():
            out_diff = (fn(a, b) - reference).abs().max().item()
        grad_diff = max_grad_diff(fn, fns["unfold"], a, b, grad)
        if out_diff > 1e-5 or grad_diff > 1e-4:
            raise AssertionError(f"{case} {name}: disagrees with unfold "
                                 f"(out {out_diff:.2e}, grad {grad_diff:.2e})")
        results[name] = (median_ms(forward_only(fn, a, b), repeats),
                         median_ms(forward_backward(fn, a, b, grad), repeats), out_diff)
    base_fwd, base_fb, _ = results["unfold"]
    rows = []
    for name, (fwd, fb, diff) in results.items():
        rows.append(f"{str(case):<26} {name:<7} {fwd:>9.1f} {fb:>11.1f} {fwd / base_fwd:>9.3f} "
                    f"{fb / base_fb:>9.3f} {diff:>10.1e} {extra_forward_bytes(name, case) / MB:>9.1f}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads; 1 by default for stable numbers on a shared machine")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per measurement (median)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cases = [Case(14, 64, 28, 28, 15), Case(14, 64, 14, 14, 7)]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), median of {args.repeats}; "
          "ratio = method / unfold; max|diff| vs unfold (forward); extra MB = analytic forward temporaries")
    print(f"{'case':<26} {'method':<7} {'fwd ms':>9} {'fwd+bwd ms':>11} {'fwd ratio':>9} {'fb ratio':>9} "
          f"{'max|diff|':>10} {'extra MB':>9}")
    for case in cases:
        for row in bench_case(case, args.repeats):
            print(row)


if __name__ == "__main__":
    main()
