"""`python -m tempo.profile [model=… backbone=… dataset=…]`: parameters, GMACs and throughput of a network.

No data is read: the network is built from the composed config (conf/profile.yaml = conf/train.yaml +
a `profile` section) and fed a random clip of the configured size, (B, 3, dataset.num_segments,
dataset.input_size, dataset.input_size). Reported:

* parameters: total, trainable, and per module (the network's children, the backbone's stages, each TCM);
* GMACs for ONE clip: ``torch.utils.flop_counter.FlopCounterMode`` (MACs = FLOPs / 2) for the convolutions
  and the classifier ("counter"), plus the TCM correlation added analytically with
  ``tcm_correlation_macs`` ("correlation", spec B8). The counter does see the GEMMs of the correlation
  (``correlation.py`` evaluates it as batched matrix products that do (W + 2R)/P times the necessary
  multiply-adds, and shares the pair (F0, F1) between the two scales); those are replaced by the analytic
  count, which is the cost of the operation as specified and what the papers report;
* throughput on the current device (``profile.device``): forward (eval, no grad) and forward+backward
  (train mode) clips/s for a batch of ``profile.batch_size`` clips, median of ``profile.repeats`` timed
  runs after ``profile.warmup`` untimed ones.

Printed as a rich table and written as JSON to ``<run dir>/profile.json`` (and to ``profile.json_out``).
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from tempo.models.blocks.tcm import MultiScaleTemporalDynamics, TemporalCorrelationModule

log = logging.getLogger(__name__)

GEMM_OPS = ("aten.bmm", "aten.baddbmm", "aten.mm", "aten.addmm")


def num_params(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def tcm_blocks(model: nn.Module) -> dict[str, TemporalCorrelationModule]:
    """Qualified name → TCM block, e.g. ``backbone.after_stage.2`` (the TCM after res3)."""
    return {name: m for name, m in model.named_modules() if isinstance(m, TemporalCorrelationModule)}


def tcm_label(name: str) -> str:
    """``backbone.after_stage.2`` → ``TCM@res3`` (stage k of the ResNet is res k+1)."""
    stage = name.rsplit(".", 1)[-1]
    return f"TCM@res{int(stage) + 1}" if stage.isdigit() else "TCM"


def param_table(model: nn.Module) -> dict[str, int]:
    """Parameters per module: the network's children, their children (backbone stages) and every TCM."""
    rows: dict[str, int] = {}
    blocks = tcm_blocks(model)
    for name, module in model.named_modules():
        depth = name.count(".") + 1 if name else 0
        if (depth in (1, 2) or name in blocks) and num_params(module):
            rows[name] = num_params(module)
    return rows


def make_clip(cfg: DictConfig, batch: int, device: torch.device) -> torch.Tensor:
    """A random (B, 3, T, S, S) clip of the configured number of segments and input size."""
    t, s = int(cfg.dataset.num_segments), int(cfg.dataset.input_size)
    return torch.randn(batch, 3, t, s, s, device=device)


def _capture_tcm_inputs(model: nn.Module) -> tuple[dict[str, torch.Size], list]:
    shapes: dict[str, torch.Size] = {}
    handles = []
    for name, block in tcm_blocks(model).items():
        def hook(_module, args, name=name):
            shapes[name] = args[0].shape
        handles.append(block.register_forward_pre_hook(hook))
    return shapes, handles


def _counter_key(model: nn.Module, name: str) -> str:
    """FlopCounterMode's name of the submodule `name` ("" = the model itself)."""
    root = type(model).__name__
    return f"{root}.{name}" if name else root


def count_macs(model: nn.Module, clip: torch.Tensor) -> dict:
    """MACs of one forward pass on `clip` (per clip: divide by the batch), counter and analytic parts.

    Works for any module (a whole network or a single TCM block).
    """
    mtdm_names = {_counter_key(model, n) for n, m in model.named_modules() if isinstance(m, MultiScaleTemporalDynamics)}
    shapes, handles = _capture_tcm_inputs(model)
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(clip)
    finally:
        for h in handles:
            h.remove()
    counts = counter.get_flop_counts()

    def gemm_flops(key: str) -> int:
        return sum(c for op, c in counts.get(key, {}).items() if str(op) in GEMM_OPS)

    corr_gemm = sum(gemm_flops(k) for k in mtdm_names)
    counter_macs = (counter.get_total_flops() - corr_gemm) / 2
    blocks = {}
    for name, block in tcm_blocks(model).items():
        nt, _, h, w = shapes[name]
        key = _counter_key(model, name)
        mtdm = _counter_key(model, f"{name}.mtdm" if name else "mtdm")
        conv = (sum(counts.get(key, {}).values()) - gemm_flops(mtdm)) / 2
        corr = block.correlation_macs(h, w, batch=nt // block.num_segments)
        blocks[tcm_label(name)] = {"module": name, "input": list(shapes[name]), "params": num_params(block),
                                   "counter_macs": conv, "correlation_macs": corr, "total_macs": conv + corr}
    correlation = sum(b["correlation_macs"] for b in blocks.values())
    return {"counter_macs": counter_macs, "correlation_macs": correlation,
            "total_macs": counter_macs + correlation, "correlation_gemm_macs_counted": corr_gemm / 2,
            "tcm_blocks": blocks}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(step: Callable[[], None], device: torch.device, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(max(1, repeats)):
        _sync(device)
        start = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def throughput(model: nn.Module, clip: torch.Tensor, warmup: int = 1, repeats: int = 3) -> dict:
    """Forward (eval, no grad) and forward+backward (train) clips/s, median over `repeats`."""
    device = clip.device

    def forward() -> None:
        with torch.no_grad():
            model(clip)

    def train_step() -> None:
        model.zero_grad(set_to_none=True)
        model(clip)["logits"].float().sum().backward()

    model.eval()
    fwd = median_seconds(forward, device, warmup, repeats)
    model.train()
    step = median_seconds(train_step, device, warmup, repeats)
    model.zero_grad(set_to_none=True)
    batch = clip.shape[0]
    return {"device": str(device), "batch_size": batch, "repeats": repeats, "warmup": warmup,
            "forward_s": fwd, "forward_clips_per_s": batch / fwd,
            "train_step_s": step, "train_clips_per_s": batch / step}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def profile_network(cfg: DictConfig) -> dict:
    """Build the network of `cfg` and measure it; returns the report (see the module docstring)."""
    opts = cfg.profile
    device = resolve_device(str(opts.device))
    model = instantiate(cfg.model.network).to(device)
    params = param_table(model)
    report = {
        "model": cfg.model.network._target_,
        "backbone": OmegaConf.to_container(cfg.backbone, resolve=True),
        "dataset": cfg.dataset.name,
        "num_classes": int(cfg.dataset.num_classes),
        "clip": [3, int(cfg.dataset.num_segments), int(cfg.dataset.input_size), int(cfg.dataset.input_size)],
        "params": {"total": num_params(model), "trainable": num_params(model, trainable_only=True),
                   "modules": params},
    }
    macs = count_macs(model, make_clip(cfg, 1, device))
    report["gmacs"] = {k: macs[k] / 1e9 for k in ("counter_macs", "correlation_macs", "total_macs",
                                                  "correlation_gemm_macs_counted")}
    report["tcm_blocks"] = {label: {**b, **{k.replace("_macs", "_gmacs"): b[k] / 1e9
                                            for k in ("counter_macs", "correlation_macs", "total_macs")}}
                            for label, b in macs["tcm_blocks"].items()}
    if opts.repeats > 0:
        report["throughput"] = throughput(model, make_clip(cfg, int(opts.batch_size), device),
                                          int(opts.warmup), int(opts.repeats))
    return report


def print_report(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{report['model']}  clip {report['clip']}  K={report['num_classes']}")
    table.add_column("module")
    table.add_column("params", justify="right")
    labels = {b["module"]: label for label, b in report["tcm_blocks"].items()}
    for name, n in report["params"]["modules"].items():
        table.add_row(f"{name} ({labels[name]})" if name in labels else name, f"{n:,}")
    table.add_row("[b]total[/b]", f"[b]{report['params']['total']:,}[/b]")
    g = report["gmacs"]
    table.add_row("GMACs / clip: counter (conv, fc)", f"{g['counter_macs']:.3f}")
    table.add_row("GMACs / clip: TCM correlation (analytic)", f"{g['correlation_macs']:.3f}")
    table.add_row("[b]GMACs / clip: total[/b]", f"[b]{g['total_macs']:.3f}[/b]")
    for label, b in report["tcm_blocks"].items():
        table.add_row(f"  {label}: conv + correlation GMACs",
                      f"{b['counter_gmacs']:.3f} + {b['correlation_gmacs']:.3f} = {b['total_gmacs']:.3f}")
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


@hydra.main(version_base="1.3", config_path="../conf", config_name="profile")
def main(cfg: DictConfig) -> None:
    torch.set_float32_matmul_precision("high")
    report = profile_network(cfg)
    print_report(report)
    paths = [Path(cfg.paths.output_dir) / "profile.json"]
    if cfg.profile.get("json_out"):
        paths.append(Path(cfg.profile.json_out))
    write_report(report, paths)


if __name__ == "__main__":
    main()
