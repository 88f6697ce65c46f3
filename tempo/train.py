"""`python -m tempo.train [overrides]`: compose → seed → build → fit → test → summary.json.

A run that diverges (non-finite loss or weights) stops at once, keeps the checkpoints of its
last finite epoch, records the failure in summary.json and exits with status 1. A run sent
SIGTERM (or SLURM's SIGUSR1) saves the current step, writes `"status": "preempted"` and exits with
status 75 (`tempo.run.resume`). Resuming (`ckpt_path=<run>/checkpoints/last.ckpt`; a requeued
SLURM job by itself) continues in that run's folder, with the batches the run would have seen.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from tempo import CONF_DIR
from tempo.analysis.complexity import network_complexity
from tempo.run.acceleration import resolve_precision
from tempo.run.build import build_callbacks, build_loggers, build_module
from tempo.run.callbacks import MetricsHistory, _floats, plot_curves, write_summary
from tempo.run.checkpoint import RunInfo
from tempo.run.config import check_config
from tempo.run.divergence import TrainingDiverged
from tempo.run.frontdoor import user_errors
from tempo.run.loggers import finish_runs, logger_callbacks
from tempo.run.multirun import pin_ddp_ranks_to_job
from tempo.run.quiet import quiet_startup
from tempo.run.resume import PREEMPTED_EXIT, Preemption, RunPreempted, StepSeeding, requeued_checkpoint
from tempo.run.run_info import log_best_metric, log_hyperparameters, print_config

log = logging.getLogger(__name__)


def is_rank_zero() -> bool:
    """Before the trainer exists: the launcher's environment says which process this is."""
    return all(int(os.environ.get(key, 0)) == 0 for key in ("RANK", "LOCAL_RANK", "NODE_RANK"))


def resumed_run_dir(ckpt_path: str | None) -> Path | None:
    """The tempo run folder a checkpoint belongs to (`<run>/checkpoints/x.ckpt`), if any."""
    if not ckpt_path or ckpt_path in ("last", "best"):
        return None
    folder = Path(ckpt_path).resolve().parent
    run = folder.parent
    return run if folder.name == "checkpoints" and (run / "config_resolved.yaml").is_file() else None


def continue_in(cfg: DictConfig, run_dir: Path) -> None:
    """Point every output of `cfg` at the resumed run's folder; loggers start a new version
    there (CSVLogger would delete the earlier metrics.csv)."""
    fresh = Path(cfg.paths.output_dir)
    with open_dict(cfg):
        cfg.paths.output_dir = str(run_dir)
        versions = len(list(run_dir.glob("*/resumed-*"))) + 1
        for logger in (cfg.get("logger") or {}).values():
            if logger is not None and logger.get("version", None) == "":
                logger.version = f"resumed-{versions}"
    if is_rank_zero() and fresh.resolve() != run_dir.resolve():
        fresh.mkdir(parents=True, exist_ok=True)
        link = fresh / "resumed_run"
        if not link.exists():
            link.symlink_to(run_dir.resolve(), target_is_directory=True)
        log.info("resuming in the original run folder %s (linked from %s)", run_dir, link)


def backbone_name(cfg: DictConfig) -> str | None:
    """The backbone config's name (e.g. resnet_tiny): Hydra's choice, else the option file that
    matches the composed config best (in-process runs have no Hydra context)."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return HydraConfig.get().runtime.choices.get("backbone")
    composed = OmegaConf.to_container(cfg.backbone, resolve=True)
    best, best_score = None, float("-inf")
    for path in sorted((Path(CONF_DIR) / "backbone").glob("*.yaml")):
        option = OmegaConf.to_container(OmegaConf.load(path))
        option = {k: v for k, v in option.items() if k != "defaults"}
        score = sum(1 if composed.get(k) == v else -1 for k, v in option.items() if k != "pretrained")
        if option.get("_target_") == composed.get("_target_") and score > best_score:
            best, best_score = path.stem, score
    return best


def checkpoint_epoch(path: str | None) -> int | None:
    """1-based epoch a checkpoint was saved at (read from the file, so it always matches)."""
    if not path or not Path(path).is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return int(state["epoch"]) + 1


def fit(trainer: L.Trainer, module, datamodule, ckpt_path) -> tuple[str, dict | None]:
    """`trainer.fit` → (status, failure): a diverging or pre-empted run returns why it stopped
    instead of raising."""
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    except TrainingDiverged as err:
        log.error("training stopped: %s", err)
        return "diverged", {"message": str(err), **err.details}
    except RunPreempted as err:
        log.warning("pre-empted: %s", err)
        return "preempted", {"message": str(err), **err.details}
    return "completed", None


def run(cfg: DictConfig) -> dict:
    """Train and test as `cfg` says; returns the summary (also written to summary.json).
    Raises `TrainingDiverged` or `RunPreempted` (after writing summary.json) when the run
    diverged or was pre-empted."""
    start = time.time()
    quiet_startup()
    check_config(cfg)
    if cfg.get("ckpt_path") is None and (requeued := requeued_checkpoint(cfg.paths.output_dir)):
        log.info("requeued SLURM job: resuming from %s", requeued)
        with open_dict(cfg):
            cfg.ckpt_path = requeued
    resumed = resumed_run_dir(cfg.get("ckpt_path"))
    if resumed is not None:
        continue_in(cfg, resumed)
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    resolved = run_dir / "config_resolved.yaml"
    if is_rank_zero():
        resolved.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    datamodule = instantiate(cfg.dataset.datamodule, report_dir=str(run_dir), seed=cfg.seed)
    module = build_module(cfg)
    history = MetricsHistory()
    loggers = build_loggers(cfg)
    if is_rank_zero() and cfg.get("print_config", True):
        print_config(cfg)
    log_hyperparameters(loggers, cfg, module.network)
    complexity = network_complexity(module.network, cfg) if is_rank_zero() else {}
    callbacks = [*build_callbacks(cfg, bool(loggers)), history, RunInfo(cfg),  # config + class names in checkpoints
                 StepSeeding(cfg.seed), Preemption(run_dir / "checkpoints"), *logger_callbacks(loggers, complexity)]
    cfg.trainer.precision = resolve_precision(cfg.trainer.get("precision"), cfg.trainer.get("accelerator"))
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False,
                                     default_root_dir=str(run_dir))
    status, failure = fit(trainer, module, datamodule, cfg.get("ckpt_path"))
    fit_metrics = _floats(trainer.callback_metrics)

    checkpoint = trainer.checkpoint_callback
    # read before testing: loading the best checkpoint restores the callback's older state
    best = checkpoint.best_model_path if checkpoint else ""
    last = checkpoint.last_model_path if checkpoint else ""
    best_score = checkpoint.best_model_score if checkpoint else None
    test_metrics: dict = {}
    if cfg.get("run_test", True) and failure is None:
        results = trainer.test(module, datamodule=datamodule, ckpt_path=best or None)
        test_metrics = _floats(results[0]) if results else {}

    metric = cfg.get("optimized_metric")
    best_score = float(best_score) if best_score is not None else fit_metrics.get(metric)
    log_best_metric(loggers, best_score, trainer.global_step)
    summary = {
        "status": status,
        "model": cfg.model.network._target_,
        "backbone": backbone_name(cfg),
        "dataset": cfg.dataset.name,
        "best": {"metric": metric, "value": best_score, "epoch": checkpoint_epoch(best)},
        "final": fit_metrics,
        "test": test_metrics,
        "checkpoints": {"best": best if best and Path(best).is_file() else None,
                        "last": last if last and Path(last).is_file() else None},
        "lr": getattr(module, "lr_info", {}),
        "decode_failures": module.decode_failures,
        "excluded": dict(module.excluded),
        "dropped_missing": dict(getattr(datamodule, "dropped", {})),
        "epochs": trainer.current_epoch,  # completed epochs (the last one is numbered this in the logs)
        "global_step": trainer.global_step,
        "wall_time_s": round(time.time() - start, 2),
        "complexity": complexity,  # params, GMACs per clip
        "config": str(resolved),
        "run_dir": str(run_dir),
        "resumed_from": cfg.get("ckpt_path"),
        "history": history.epochs,
    }
    if failure is not None:
        summary["failure"] = failure
    if status == "preempted":  # the step it stopped at, not the last epoch's end
        summary["checkpoints"]["last"] = failure["checkpoint"]
    if trainer.is_global_zero:
        plot = plot_curves(history.epochs, run_dir / "curves.png")
        summary["curves"] = str(plot) if plot else None
        write_summary(run_dir / "summary.json", summary)
        print(f"summary: {run_dir / 'summary.json'}  best {metric}={best_score}  "
              f"test={ {k: round(v, 4) for k, v in test_metrics.items()} }")
    finish_runs(loggers)
    if status == "diverged":
        raise TrainingDiverged(failure["message"], failure)
    if status == "preempted":
        raise RunPreempted(failure["signal"], failure["checkpoint"], failure["step"], failure["epoch"])
    return summary


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
@user_errors
def main(cfg: DictConfig) -> float | None:
    torch.set_float32_matmul_precision("high")
    pin_ddp_ranks_to_job()  # multirun + DDP: extra ranks join this job's folder, not a new sweep
    try:
        summary = run(cfg)
    except RunPreempted as err:
        print(f"pre-empted: {err}", file=sys.stderr)
        sys.exit(PREEMPTED_EXIT)  # also in a sweep: the process was told to stop
    except TrainingDiverged as err:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        print(f"error: training diverged: {err}", file=sys.stderr)
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            return float("nan")  # one diverging job does not end the sweep; its summary says so
        sys.exit(1)
    return summary["best"]["value"]


if __name__ == "__main__":
    main()
