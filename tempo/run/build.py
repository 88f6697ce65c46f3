"""Building a run's objects from the composed config: the LightningModule, callbacks and loggers."""

from __future__ import annotations

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor, ModelSummary, ProgressBar
from omegaconf import DictConfig, OmegaConf

from tempo.run.acceleration import apply_model_switches
from tempo.run.callbacks import EpochTQDMProgressBar, ParamSummary


def build_callbacks(cfg: DictConfig, has_logger: bool) -> list[L.Callback]:
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    # the LR monitor writes through a logger; with logger=none the LR is still in summary.json
    callbacks = [c for c in callbacks if has_logger or not isinstance(c, LearningRateMonitor)]
    trainer = cfg.get("trainer") or {}
    if trainer.get("enable_progress_bar", True) and not any(isinstance(c, ProgressBar) for c in callbacks):
        callbacks.append(EpochTQDMProgressBar())  # Lightning's default, with 1-based epochs
    if trainer.get("enable_model_summary", True) and not any(isinstance(c, ModelSummary) for c in callbacks):
        callbacks.append(ParamSummary())
    return callbacks


def build_loggers(cfg: DictConfig) -> list:
    return [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]


def build_module(cfg: DictConfig, network=None):
    network = network if network is not None else instantiate(cfg.model.network)
    apply_model_switches(network, bool(cfg.model.get("compile")), bool(cfg.model.get("channels_last")),
                         cfg.trainer.get("accelerator"))
    schedule = None
    if cfg.get("schedule"):
        schedule = OmegaConf.to_container(cfg.schedule, resolve=True)
        schedule["factor"] = instantiate(cfg.schedule.factor)
    # objects are passed to the partial afterwards: Hydra would turn them into configs
    factory = instantiate(cfg.module, _partial_=True)
    return factory(network=network, loss=instantiate(cfg.model.loss), optimizer=instantiate(cfg.optimizer),
                   schedule=schedule)
