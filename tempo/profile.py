"""`python -m tempo.profile [model=… backbone=… dataset=…]`: parameters, GMACs and throughput of a network.

No data is read: the network is built from the composed config (conf/profile.yaml = conf/train.yaml +
a `profile` section) and fed a random clip of the configured size. What is counted and the hooks a
network can define are described in `tempo.analysis.counting`. Printed as a rich table and written as
JSON to ``<run dir>/profile.json`` (and to ``profile.json_out``).
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from tempo import CONF_DIR
from tempo.analysis.counting import profile_network
from tempo.run.config import check_bounds
from tempo.run.frontdoor import user_errors


def _split(g: dict) -> str:
    """'counter + term1 + term2 = total' in GMACs."""
    parts = [f"{g['counter']:.3f}", *(f"{v:.3f} ({k})" for k, v in g["analytic"].items())]
    return " + ".join(parts) + (f" = {g['total']:.3f}" if g["analytic"] else "")


def print_report(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{report['model']}  clip {report['clip']}  K={report['num_classes']}")
    table.add_column("module")
    table.add_column("params", justify="right")
    labels = {b["module"]: label for label, b in report["blocks"].items()}
    for name, n in report["params"]["modules"].items():
        table.add_row(f"{name} ({labels[name]})" if name in labels else name, f"{n:,}")
    params = report["params"]
    table.add_row("[b]total[/b]", f"[b]{params['total']:,}[/b]")
    if params["training_only"]:
        table.add_row(f"inference (without training-only {', '.join(params['training_only'])})",
                      f"{params['inference']:,}")
    g = report["gmacs"]
    table.add_row("GMACs / clip: FLOP counter", f"{g['counter']:.3f}")
    for term, value in g["analytic"].items():
        table.add_row(f"GMACs / clip: {term} (analytic)", f"{value:.3f}")
    table.add_row("[b]GMACs / clip: total[/b]", f"[b]{g['total']:.3f}[/b]")
    for label, b in report["blocks"].items():
        table.add_row(f"  {label}: GMACs counter + analytic", _split(b["gmacs"]))
    if "throughput" in report:
        t = report["throughput"]
        table.add_row(f"forward clips/s ({t['device']}, batch {t['batch_size']})", f"{t['forward_clips_per_s']:.2f}")
        table.add_row(f"forward+backward clips/s ({t['device']}, batch {t['batch_size']})",
                      f"{t['train_clips_per_s']:.2f}")
    Console().print(table)


def write_report(report: dict, paths: list[Path]) -> None:
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2))
        print(f"profile: {path}")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="profile")
@user_errors
def main(cfg: DictConfig) -> None:
    torch.set_float32_matmul_precision("high")
    check_bounds(cfg)  # the typed values training checks (no data is read here, so no path checks)
    report = profile_network(cfg)
    print_report(report)
    paths = [Path(cfg.paths.output_dir) / "profile.json"]
    if cfg.profile.get("json_out"):
        paths.append(Path(cfg.profile.json_out))
    write_report(report, paths)


if __name__ == "__main__":
    main()
