"""Start-up checks of a composed config: fail in seconds, not after an hour of training."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from tempo.data.paths import DATASET_PATHS, dataset_path_problem
from tempo.errors import ConfigError

__all__ = ["ConfigError", "Bound", "check_bounds", "check_config"]


@dataclass(frozen=True)
class Bound:
    """The type and range a typed value must have: `integer` or a number, `low` ≤ (or <, with
    `low_open`) value ≤ `high` (< with `high_open`); `optional`: null is allowed too."""

    key: str
    integer: bool = False
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    optional: bool = False

    def allowed(self) -> str:
        kind = "an integer" if self.integer else "a number"
        low = None if self.low is None else f"{'>' if self.low_open else '≥'} {self.low:g}"
        high = None if self.high is None else f"{'<' if self.high_open else '≤'} {self.high:g}"
        if low and high:
            kind += f" in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        elif low or high:
            kind += f" {low or high}"
        return kind + (" (or null)" if self.optional else "")

    def problem(self, value) -> str | None:
        if value is None and self.optional:
            return None
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not number or (self.integer and not isinstance(value, int)) or value != value \
                or (self.low is not None and (value <= self.low if self.low_open else value < self.low)) \
                or (self.high is not None and (value >= self.high if self.high_open else value > self.high)):
            return f"{self.key} must be {self.allowed()}, got {value!r}"
        return None


# The values users type, as the training config names them (absent keys are skipped: a model
# or optimizer without that option).
TRAIN_BOUNDS = (
    Bound("seed", integer=True),
    Bound("optimizer.lr", low=0, low_open=True),
    Bound("optimizer.weight_decay", low=0),
    Bound("optimizer.momentum", low=0, high=1, high_open=True),
    Bound("dataset.num_classes", integer=True, low=1),
    Bound("dataset.batch_size", integer=True, low=1),
    Bound("dataset.num_workers", integer=True, low=0),
    Bound("dataset.num_segments", integer=True, low=1),
    Bound("dataset.input_size", integer=True, low=1),
    Bound("dataset.short_side", integer=True, low=1, optional=True),
    Bound("dataset.test_clips", integer=True, low=1),
    Bound("trainer.max_epochs", integer=True, low=-1, optional=True),
    Bound("trainer.max_steps", integer=True, low=-1),
    Bound("trainer.accumulate_grad_batches", integer=True, low=1),
    Bound("trainer.num_nodes", integer=True, low=1),
    Bound("schedule.warmup_epochs", low=0),
    Bound("schedule.warmup_start_factor", low=0, high=1, low_open=True),
    Bound("module.finite_check_every", integer=True, low=0),
)


def check_bounds(cfg: DictConfig, bounds=TRAIN_BOUNDS) -> None:
    """Each present key of `bounds` holds a value of its type and range (one message for all that do not)."""
    problems = []
    for bound in bounds:
        parent, _, name = bound.key.rpartition(".")
        node = OmegaConf.select(cfg, parent, default=None) if parent else cfg
        if isinstance(node, DictConfig) and name in node:
            problems.append(bound.problem(node[name]))
    problems = [p for p in problems if p]
    if problems:
        raise ConfigError("\n".join(problems))


def _check_required(cfg: DictConfig) -> None:
    for key in DATASET_PATHS:
        if key in cfg.dataset and cfg.dataset[key] is None:
            raise ConfigError(dataset_path_problem(cfg.dataset.name, key, None))
    if "num_classes" in cfg.dataset and cfg.dataset.num_classes is None:
        raise ConfigError("dataset.num_classes is not set; pass the number of classes (e.g. `dataset.num_classes=10`)")


def _check_paths(cfg: DictConfig) -> None:
    problems = [dataset_path_problem(cfg.dataset.name, key, cfg.dataset.get(key))
                for key in DATASET_PATHS if cfg.dataset.get(key) is not None]
    problems = [p for p in problems if p]
    if problems:
        raise ConfigError("\n".join(problems))


def _check_segments(cfg: DictConfig) -> None:
    network = cfg.model.network
    sampler = cfg.dataset.datamodule.get("sampler") or {}
    clip = sampler.get("num_segments", sampler.get("clip_len"))
    if "num_segments" in network and clip is not None and network.num_segments != clip:
        raise ConfigError(f"model.network.num_segments={network.num_segments} but the sampler yields clips "
                          f"of {clip} frames; set both through dataset.num_segments")


def _check_schedule(cfg: DictConfig) -> None:
    schedule = cfg.get("schedule") or {}
    factor = schedule.get("factor") or {}
    if schedule.get("interval", "epoch") not in ("epoch", "step"):
        raise ConfigError(f"schedule.interval must be 'epoch' or 'step', got {schedule.interval!r}")
    milestones = factor.get("milestones")
    if milestones is not None and list(milestones) != sorted(milestones):
        raise ConfigError(f"schedule.factor.milestones must be increasing, got {list(milestones)}")


def _check_accelerator(cfg: DictConfig) -> None:
    trainer = cfg.trainer
    if trainer.get("accelerator") not in ("gpu", "cuda") or torch.cuda.is_available():
        return
    if str(trainer.get("strategy", "auto")).startswith("ddp") or trainer.get("devices") not in (1, "1", None):
        raise ConfigError("trainer asks for GPUs (accelerator=gpu) but CUDA is not available here; for several "
                          "processes on CPUs use trainer=ddp_cpu (e.g. `trainer=ddp_cpu trainer.devices=2`), "
                          "for one use trainer=cpu")
    raise ConfigError("trainer asks for a GPU (accelerator=gpu) but CUDA is not available here; use trainer=cpu")


def _check_determinism(cfg: DictConfig) -> None:
    trainer = cfg.get("trainer") or {}
    if trainer.get("deterministic") and trainer.get("benchmark"):
        raise ConfigError(f"trainer.deterministic={trainer.deterministic} with trainer.benchmark=true (set by "
                          "trainer=gpu/ddp): cuDNN's autotuner ignores the deterministic mode; add "
                          "trainer.benchmark=false")


def check_config(cfg: DictConfig) -> None:
    ckpt = cfg.get("ckpt_path")
    if ckpt and ckpt not in ("last", "best") and not Path(ckpt).is_file():
        raise ConfigError(f"ckpt_path={ckpt} is not a file; pass a checkpoint such as "
                          "outputs/<date>/<time>/checkpoints/last.ckpt")
    _check_required(cfg)
    check_bounds(cfg)
    _check_paths(cfg)
    _check_segments(cfg)
    _check_schedule(cfg)
    _check_accelerator(cfg)
    _check_determinism(cfg)
