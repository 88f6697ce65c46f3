"""`python -m tempo.train [overrides]`: compose → seed → build → fit → test → summary.json."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor
from omegaconf import DictConfig, OmegaConf

from tempo.callbacks import MetricsHistory, _floats, plot_curves, write_summary
from tempo.config import check_config

log = logging.getLogger(__name__)


def build_callbacks(cfg: DictConfig, has_logger: bool) -> list[L.Callback]:
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    # the LR monitor writes through a logger; with logger=none the LR is still in summary.json
    return [c for c in callbacks if has_logger or not isinstance(c, LearningRateMonitor)]


def build_loggers(cfg: DictConfig) -> list:
    return [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]


def build_module(cfg: DictConfig, network=None):
    network = network if network is not None else instantiate(cfg.model.network)
    schedule = None
    if cfg.get("schedule"):
        schedule = OmegaConf.to_container(cfg.schedule, resolve=True)
        schedule["factor"] = instantiate(cfg.schedule.factor)
    # objects are passed to the partial afterwards: Hydra would turn them into configs
    factory = instantiate(cfg.module, _partial_=True)
    return factory(network=network, loss=instantiate(cfg.model.loss), optimizer=instantiate(cfg.optimizer),
                   schedule=schedule)


def output_dir(cfg: DictConfig) -> Path:
    path = Path(cfg.paths.output_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def run(cfg: DictConfig) -> dict:
    """Train and test as `cfg` says; returns the summary (also written to summary.json)."""
    start = time.time()
    check_config(cfg)
    run_dir = output_dir(cfg)
    resolved = run_dir / "config_resolved.yaml"
    resolved.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    L.seed_everything(cfg.seed, workers=True)

    datamodule = instantiate(cfg.dataset.datamodule, report_dir=str(run_dir))
    module = build_module(cfg)
    history = MetricsHistory()
    loggers = build_loggers(cfg)
    callbacks = [*build_callbacks(cfg, bool(loggers)), history]
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False,
                                     default_root_dir=str(run_dir))
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    fit_metrics = _floats(trainer.callback_metrics)

    checkpoint = trainer.checkpoint_callback
    # read before testing: loading the best checkpoint restores the callback's older state
    best = checkpoint.best_model_path if checkpoint else ""
    last = checkpoint.last_model_path if checkpoint else ""
    best_score = checkpoint.best_model_score if checkpoint else None
    test_metrics: dict = {}
    if cfg.get("run_test", True):
        results = trainer.test(module, datamodule=datamodule, ckpt_path=best or None)
        test_metrics = _floats(results[0]) if results else {}

    metric = cfg.get("optimized_metric")
    best_score = float(best_score) if best_score is not None else fit_metrics.get(metric)
    summary = {
        "model": cfg.model.network._target_,
        "backbone": cfg.backbone.get("depth"),
        "dataset": cfg.dataset.name,
        "best": {"metric": metric, "value": best_score,
                 "epoch": _best_epoch(history.epochs, metric)},
        "final": fit_metrics,
        "test": test_metrics,
        "checkpoints": {"best": best or None, "last": last or None},
        "lr": getattr(module, "lr_info", {}),
        "decode_failures": module.decode_failures,
        "excluded": dict(module.excluded),
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
        "wall_time_s": round(time.time() - start, 2),
        "config": str(resolved),
        "run_dir": str(run_dir),
        "history": history.epochs,
    }
    if trainer.is_global_zero:
        plot = plot_curves(history.epochs, run_dir / "curves.png")
        summary["curves"] = str(plot) if plot else None
        write_summary(run_dir / "summary.json", summary)
        print(f"summary: {run_dir / 'summary.json'}  best {metric}={best_score}  "
              f"test={ {k: round(v, 4) for k, v in test_metrics.items()} }")
    return summary


def _best_epoch(history: list[dict], metric: str | None) -> int | None:
    scored = [(h[metric], h["epoch"]) for h in history if metric and metric in h]
    return max(scored)[1] if scored else None


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    if os.environ.get("TEMPO_PRINT_CONFIG"):
        print(OmegaConf.to_yaml(cfg))
    torch.set_float32_matmul_precision("high")
    summary = run(cfg)
    return summary["best"]["value"]


if __name__ == "__main__":
    main()
