"""Counting a network: parameters, GMACs (FlopCounterMode plus analytic terms) and throughput.

No data is read: the network is built from the composed config (conf/profile.yaml = conf/train.yaml +
a `profile` section) and fed a random clip of the configured size, (B, 3, dataset.num_segments,
dataset.input_size, dataset.input_size). Reported:

* parameters: total, trainable, inference (without training-only modules), and per module (the network's
  children, their children, and every labelled block);
* GMACs for ONE clip in eval mode: ``torch.utils.flop_counter.FlopCounterMode`` (MACs = FLOPs / 2), plus the
  analytic terms modules report for work the counter cannot count right;
* throughput on the current device (``profile.device``): forward (eval, no grad) and forward+backward
  (train mode) clips/s for a batch of ``profile.batch_size`` clips, median of ``profile.repeats`` timed
  runs after ``profile.warmup`` untimed ones.

Nothing here knows a particular model. A network is counted by FlopCounterMode alone unless it (or one of
its modules) defines one of these optional hooks:

* ``module.analytic_macs(input_shape: torch.Size) -> dict[str, int]``: multiply-adds of one forward call
  whose first input had ``input_shape``, by term name (e.g. ``{"correlation": n}``). The matrix-product ops
  the counter saw inside that module (``aten.mm``/``bmm``/``addmm``/``baddbmm``) are dropped and these terms
  added instead; its convolutions and other ops stay counted. Use it for an op the counter misses or
  over-counts (TCM's correlation runs as GEMMs that do (W + 2R)/P times the necessary work).
* ``network.profile_blocks() -> dict[str, nn.Module]``: blocks that get a row of their own (parameters,
  input shape, counter and analytic MACs), by label, e.g. ``{"TCM@res3": block}``.
* ``network.training_only_modules() -> Iterable[nn.Module]``: modules that only run in training (e.g. an
  auxiliary classifier); their parameters are listed under ``params.training_only`` and left out of
  ``params.inference``. (GMACs are counted in eval mode, so such a module should not run there.)

Printed as a rich table and written as JSON to ``<run dir>/profile.json`` (and to ``profile.json_out``).
"""

from __future__ import annotations

import logging
import statistics
import time
from collections import defaultdict
from collections.abc import Callable

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

log = logging.getLogger(__name__)

GEMM_OPS = ("aten.bmm", "aten.baddbmm", "aten.mm", "aten.addmm")


def num_params(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def profile_blocks(model: nn.Module) -> dict[str, str]:
    """Label → qualified module name of the blocks the network asks to report (``profile_blocks`` hook)."""
    hook = getattr(model, "profile_blocks", None)
    if hook is None:
        return {}
    names = {id(m): name for name, m in model.named_modules()}
    return {label: names[id(block)] for label, block in hook().items()}


def training_only_params(model: nn.Module) -> dict[str, int]:
    """Qualified name → parameters of each module the network marks training-only (``training_only_modules``)."""
    hook = getattr(model, "training_only_modules", None)
    if hook is None:
        return {}
    names = {id(m): name for name, m in model.named_modules()}
    return {names[id(m)]: num_params(m) for m in hook()}


def param_table(model: nn.Module) -> dict[str, int]:
    """Parameters per module: the network's children, their children (e.g. backbone stages), labelled blocks."""
    rows: dict[str, int] = {}
    blocks = set(profile_blocks(model).values())
    for name, module in model.named_modules():
        depth = name.count(".") + 1 if name else 0
        if (depth in (1, 2) or name in blocks) and num_params(module):
            rows[name] = num_params(module)
    return rows


def param_report(model: nn.Module) -> dict:
    training_only = training_only_params(model)
    modules = dict(model.named_modules())
    seen = {id(p) for name in training_only for p in modules[name].parameters()}
    total = num_params(model)
    return {"total": total, "trainable": num_params(model, trainable_only=True),
            "inference": total - sum(p.numel() for p in model.parameters() if id(p) in seen),
            "training_only": training_only, "modules": param_table(model)}


def make_clip(cfg: DictConfig, batch: int, device: torch.device) -> torch.Tensor:
    """A random (B, 3, T, S, S) clip of the configured number of segments and input size."""
    t, s = int(cfg.dataset.num_segments), int(cfg.dataset.input_size)
    return torch.randn(batch, 3, t, s, s, device=device)


def _counter_key(model: nn.Module, name: str) -> str:
    """FlopCounterMode's name of the submodule `name` ("" = the model itself)."""
    root = type(model).__name__
    return f"{root}.{name}" if name else root


def _within(name: str, block: str) -> bool:
    return not block or name == block or name.startswith(block + ".")


def _record_inputs(model: nn.Module, watched: dict[str, nn.Module]) -> tuple[dict[str, list], list]:
    """Forward pre-hooks: the first input's shape of every call of each watched module."""
    shapes: dict[str, list] = defaultdict(list)
    handles = []
    for name, module in watched.items():
        def hook(_module, args, name=name):
            shapes[name].append(args[0].shape)
        handles.append(module.register_forward_pre_hook(hook))
    return shapes, handles


def count_macs(model: nn.Module, clip: torch.Tensor) -> dict:
    """MACs of one eval forward pass on `clip` (per clip: divide by the batch), for any module.

    Returns ``counter_macs`` (FlopCounterMode, minus the GEMMs replaced by analytic terms),
    ``analytic_macs`` (term → MACs, from ``analytic_macs`` hooks), ``total_macs``,
    ``replaced_gemm_macs`` (what the counter saw where analytic terms stand) and ``blocks``
    (label → the same split per ``profile_blocks`` block, with its params and input shape).
    """
    analytic = {n: m for n, m in model.named_modules() if callable(getattr(m, "analytic_macs", None))}
    blocks = profile_blocks(model)
    modules = dict(model.named_modules())
    shapes, handles = _record_inputs(model, {**analytic, **{n: modules[n] for n in blocks.values()}})
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(clip)
    finally:
        for h in handles:
            h.remove()
    counts = counter.get_flop_counts()

    def gemm_macs(name: str) -> float:
        return sum(c for op, c in counts.get(_counter_key(model, name), {}).items() if str(op) in GEMM_OPS) / 2

    def terms_and_replaced(block: str) -> tuple[dict[str, int], float]:
        terms: dict[str, int] = defaultdict(int)
        replaced = 0.0
        for name, module in analytic.items():
            if not _within(name, block) or not shapes.get(name):
                continue
            replaced += gemm_macs(name)
            for shape in shapes[name]:
                for term, macs in module.analytic_macs(shape).items():
                    terms[term] += int(macs)
        return dict(terms), replaced

    terms, replaced = terms_and_replaced("")
    counter_macs = counter.get_total_flops() / 2 - replaced
    report_blocks = {}
    for label, name in blocks.items():
        block_terms, block_replaced = terms_and_replaced(name)
        counted = sum(counts.get(_counter_key(model, name), {}).values()) / 2 - block_replaced
        report_blocks[label] = {"module": name, "input": list(shapes[name][0]) if shapes.get(name) else None,
                                "params": num_params(modules[name]), "counter_macs": counted,
                                "analytic_macs": block_terms, "total_macs": counted + sum(block_terms.values())}
    return {"counter_macs": counter_macs, "analytic_macs": terms, "total_macs": counter_macs + sum(terms.values()),
            "replaced_gemm_macs": replaced, "blocks": report_blocks}


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


def _gmacs(macs: dict) -> dict:
    return {"counter": macs["counter_macs"] / 1e9, "analytic": {k: v / 1e9 for k, v in macs["analytic_macs"].items()},
            "total": macs["total_macs"] / 1e9}


def profile_network(cfg: DictConfig) -> dict:
    """Build the network of `cfg` and measure it; returns the report (see the module docstring)."""
    opts = cfg.profile
    device = resolve_device(str(opts.device))
    model = instantiate(cfg.model.network).to(device)
    report = {
        "model": cfg.model.network._target_,
        "backbone": OmegaConf.to_container(cfg.backbone, resolve=True),
        "dataset": cfg.dataset.name,
        "num_classes": int(cfg.dataset.num_classes),
        "clip": [3, int(cfg.dataset.num_segments), int(cfg.dataset.input_size), int(cfg.dataset.input_size)],
        "params": param_report(model),
    }
    macs = count_macs(model, make_clip(cfg, 1, device))
    report["gmacs"] = {**_gmacs(macs), "replaced_gemm": macs["replaced_gemm_macs"] / 1e9}
    report["blocks"] = {label: {"module": b["module"], "input": b["input"], "params": b["params"], "gmacs": _gmacs(b)}
                        for label, b in macs["blocks"].items()}
    if opts.repeats > 0:
        report["throughput"] = throughput(model, make_clip(cfg, int(opts.batch_size), device),
                                          int(opts.warmup), int(opts.repeats))
    return report
