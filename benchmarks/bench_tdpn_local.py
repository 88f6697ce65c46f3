"""Complexity of TDPN's local module variants (spec C3), at the R50 shape on one 32×224² clip.

Run: ``python benchmarks/bench_tdpn_local.py [--frames T] [--size S]`` (seconds; the count runs on the meta
device, no arithmetic). Prints, per ``local_variant``, the branch's parameters and GMACs counted by
``torch.utils.flop_counter`` (tempo.profile's ``count_macs``), and each variant's MACs relative to
``light`` (the CNN-first variant that was the default before Eq. 1's order was followed).
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from tempo.analysis.counting import count_macs
from tempo.models.blocks.temporal_difference import LocalTemporalDifference


class LocalOnly(nn.Module):
    """The branch alone, on the res4/res5 grids of an R50 at this input size (stride 16 and 32)."""

    def __init__(self, variant: str, size: int):
        super().__init__()
        self.local = LocalTemporalDifference(64, [64, 128, 256], [3, 4, 6], fuse_channels=[1024, 2048],
                                             variant=variant)
        self.sizes = {"res4": (size // 16, size // 16), "res5": (size // 32, size // 32)}

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return sum(v.sum() for v in self.local(video, self.sizes).values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    clip = torch.empty(1, 3, args.frames, args.size, args.size, device="meta")
    rows = {}
    for variant in LocalTemporalDifference.VARIANTS:
        model = LocalOnly(variant, args.size).to("meta")
        rows[variant] = (sum(p.numel() for p in model.parameters()), count_macs(model, clip)["total_macs"])
    base = rows["light"][1]
    print(f"local module, {args.frames}×{args.size}² clip (R50 shape)")
    print(f"{'variant':<16}{'params':>12}{'GMACs':>10}{'× light':>10}")
    for variant, (params, macs) in rows.items():
        print(f"{variant:<16}{params:>12,}{macs / 1e9:>10.3f}{macs / base:>10.3f}")


if __name__ == "__main__":
    main()
