"""Start-up checks of a composed config: fail in seconds, not after an hour of training."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig

from tempo.data.paths import DATASET_PATHS, dataset_path_problem
from tempo.errors import ConfigError

__all__ = ["ConfigError", "check_config"]


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
    start = schedule.get("warmup_start_factor", 0.1)
    if not 0 < start <= 1:
        raise ConfigError(f"schedule.warmup_start_factor must be in (0, 1] (the warm-up's first LR is "
                          f"that × the LR), got {start}")
    if schedule.get("warmup_epochs", 0) < 0:
        raise ConfigError(f"schedule.warmup_epochs must be ≥ 0, got {schedule.warmup_epochs}")
    max_epochs = cfg.trainer.get("max_epochs")
    milestones = factor.get("milestones")
    if milestones is not None and list(milestones) != sorted(milestones):
        raise ConfigError(f"schedule.factor.milestones must be increasing, got {list(milestones)}")
    if cfg.optimizer.get("lr", 1.0) <= 0:
        raise ConfigError(f"optimizer.lr must be positive, got {cfg.optimizer.lr}")
    if max_epochs is not None and max_epochs < -1:
        raise ConfigError(f"trainer.max_epochs must be ≥ -1, got {max_epochs}")


def _check_accelerator(cfg: DictConfig) -> None:
    trainer = cfg.trainer
    if trainer.get("accelerator") not in ("gpu", "cuda") or torch.cuda.is_available():
        return
    if str(trainer.get("strategy", "auto")).startswith("ddp") or trainer.get("devices") not in (1, "1", None):
        raise ConfigError("trainer asks for GPUs (accelerator=gpu) but CUDA is not available here; for several "
                          "processes on CPUs use trainer=ddp_cpu (e.g. `trainer=ddp_cpu trainer.devices=2`), "
                          "for one use trainer=cpu")
    raise ConfigError("trainer asks for a GPU (accelerator=gpu) but CUDA is not available here; use trainer=cpu")


def check_config(cfg: DictConfig) -> None:
    ckpt = cfg.get("ckpt_path")
    if ckpt and ckpt not in ("last", "best") and not Path(ckpt).is_file():
        raise ConfigError(f"ckpt_path={ckpt} is not a file; pass a checkpoint such as "
                          "outputs/<date>/<time>/checkpoints/last.ckpt")
    _check_required(cfg)
    _check_paths(cfg)
    _check_segments(cfg)
    _check_schedule(cfg)
    _check_accelerator(cfg)
