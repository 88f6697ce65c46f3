"""`make coverage`'s summary: line coverage per package of tempo, then the modules under THRESHOLD.

Reads the `.coverage` data pytest-cov wrote (subprocesses included: `[tool.coverage.run] patch`).
    python tests/coverage_by_package.py [--threshold 80]
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import coverage

REPO = Path(__file__).resolve().parents[1]


def package_of(path: Path) -> str:
    """tempo/run/module.py → tempo.run; the commands at tempo/ top level → "tempo (commands)"."""
    parts = path.relative_to(REPO).with_suffix("").parts
    return "tempo (commands)" if len(parts) == 2 else ".".join(parts[:-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threshold", type=float, default=80.0)
    args = parser.parse_args()
    cov = coverage.Coverage(data_file=str(REPO / ".coverage"), config_file=str(REPO / "pyproject.toml"))
    cov.load()
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    modules = []
    for path in sorted((REPO / "tempo").rglob("*.py")):
        _, statements, _, missing, _ = cov.analysis2(str(path))
        if not statements:
            continue
        covered = len(statements) - len(missing)
        totals[package_of(path)][0] += covered
        totals[package_of(path)][1] += len(statements)
        modules.append((100 * covered / len(statements), path.relative_to(REPO), len(statements)))
    print(f"{'package':<22} {'lines':>6} {'covered':>8}")
    for name, (covered, lines) in sorted(totals.items()):
        print(f"{name:<22} {lines:6d} {100 * covered / lines:7.1f}%")
    covered, lines = map(sum, zip(*totals.values(), strict=True))
    print(f"{'total':<22} {lines:6d} {100 * covered / lines:7.1f}%")
    below = sorted(m for m in modules if m[0] < args.threshold)
    print(f"\nmodules under {args.threshold:.0f} %:" if below else f"\nno module under {args.threshold:.0f} %")
    for percent, path, lines in below:
        print(f"  {str(path):<40} {lines:5d} lines {percent:5.1f}%")


if __name__ == "__main__":
    main()
