"""Start-up checks of a composed config: fail in seconds, not after an hour of training."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig


class ConfigError(ValueError):
    pass


# dataset keys the real-dataset configs leave null for the user: what to pass, an example
REQUIRED = {
    "root": ("the folder holding the {name} videos", "/data/{name}"),
    "annotations": ("the folder holding the {name} annotation files", "/data/{name}/annotations"),
    "num_classes": ("the number of classes", "10"),
}


def _check_required(cfg: DictConfig) -> None:
    for key, (what, example) in REQUIRED.items():
        if key in cfg.dataset and cfg.dataset[key] is None:
            name = cfg.dataset.name
            raise ConfigError(f"dataset.{key} is not set; pass {what.format(name=name)} "
                              f"(e.g. `dataset.{key}={example.format(name=name)}`)")


def _check_paths(cfg: DictConfig) -> None:
    for key in ("root", "annotations"):
        value = cfg.dataset.get(key)
        if value is not None and not Path(str(value)).expanduser().exists():
            raise ConfigError(f"dataset.{key}={value} does not exist; pass the folder holding the "
                              f"{cfg.dataset.name} {'videos' if key == 'root' else 'annotation files'} "
                              f"(e.g. `dataset.{key}=/data/{cfg.dataset.name}`)")


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
    if cfg.trainer.get("accelerator") in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError("trainer asks for a GPU but CUDA is not available here; use trainer=cpu "
                          "(or trainer.accelerator=auto)")


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
