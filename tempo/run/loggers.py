"""Logger factories that need more than a `_target_` (W&B's offline fallback) and the W&B dashboard.

`wandb_logger` names and groups the runs of a Hydra multirun (group = the sweep folder, name = the job's
overrides) and `logger_callbacks` adds `WandbDashboard` beside a W&B logger: params/GMACs in the run
summary, at test the confusion matrix and a per-class accuracy table, at the end of training a table of
a few validation clips with their true and predicted labels.
"""

from __future__ import annotations

import logging
import netrc
import os
from pathlib import Path

import lightning as L
import numpy as np
import torch

from tempo.run.predictions import PredictionCollector, confusion_matrix, per_class_accuracy, plot_confusion

log = logging.getLogger(__name__)


def wandb_has_key() -> bool:
    """True when W&B could authenticate: WANDB_API_KEY or a `wandb login` netrc entry."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].split("/")[0]
    try:
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def multirun_identity() -> tuple[str | None, str | None]:
    """(group, name) of a Hydra multirun job: the sweep folder and the job's overrides; (None, None) otherwise."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None, None
    hydra = HydraConfig.get()
    if hydra.mode != RunMode.MULTIRUN:
        return None, None
    sweep = Path(hydra.sweep.dir)
    group = "/".join(sweep.parts[-3:])  # e.g. multirun/2026-12-02/05-00-00
    name = ",".join(hydra.overrides.task) or f"job{hydra.job.num}"
    return group, name


def wandb_logger(offline: bool | None = None, **kwargs):
    """A Lightning `WandbLogger` that runs offline when no API key is configured.

    `offline=None` decides by itself; `WANDB_MODE=offline|disabled` is honoured as well. In a multirun,
    `group` (when null) is the sweep folder and `name` the job's overrides.
    """
    from lightning.pytorch.loggers import WandbLogger

    mode = os.environ.get("WANDB_MODE", "")
    if offline is None:
        offline = mode in ("offline", "dryrun") or (mode != "disabled" and not wandb_has_key())
        if offline and mode not in ("offline", "dryrun"):
            log.warning("no W&B API key found: logging offline; sync later with `wandb sync`")
            print("W&B: no API key configured, logging offline (sync later with `wandb sync`).")
    group, name = multirun_identity()
    if group is not None:
        kwargs["group"] = kwargs.get("group") or group
        kwargs["name"] = name
    os.makedirs(kwargs.get("save_dir") or ".", exist_ok=True)
    logger = WandbLogger(offline=offline, **kwargs)
    # Lightning passes anonymous=None to wandb.init, which wandb ≥ 0.19 answers with a deprecation
    # warning on every run ("The anonymous setting has no effect"); not passing it means the same
    logger._wandb_init.pop("anonymous", None)
    return logger


def finish_runs(loggers: list) -> None:
    """End the W&B run of a finished job. Lightning leaves it open, and the next `WandbLogger` in the same
    process (the next job of a multirun, the next test) would then reuse it and log into the old run."""
    from lightning.pytorch.loggers import WandbLogger

    if any(isinstance(logger, WandbLogger) for logger in loggers):
        import wandb

        wandb.finish()


def logger_callbacks(loggers: list, complexity: dict, clips: int = 4) -> list[L.Callback]:
    """The callbacks the configured loggers need (W&B: `WandbDashboard`)."""
    from lightning.pytorch.loggers import WandbLogger

    return [WandbDashboard(lg, complexity, clips) for lg in loggers if isinstance(lg, WandbLogger)]


class WandbDashboard(PredictionCollector):
    def __init__(self, logger, complexity: dict, clips: int = 4):
        super().__init__()
        self.logger = logger
        self.complexity = dict(complexity or {})
        self.clips = clips

    def _class_names(self, trainer) -> list[str]:
        names = getattr(getattr(trainer, "datamodule", None), "class_names", None)
        return list(names) if names else [str(i) for i in range(trainer.lightning_module.num_classes)]

    def on_fit_start(self, trainer, pl_module) -> None:
        if trainer.is_global_zero and self.complexity:
            self.logger.experiment.summary.update(self.complexity)

    def on_fit_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero and self.clips:
            self.log_validation_clips(trainer, pl_module)

    @torch.no_grad()
    def log_validation_clips(self, trainer, pl_module) -> None:
        """The first validation clips: `val/clips`, their frame strips captioned with the true and predicted
        class, and `val/clip_predictions`, a table of the same (clip number, true, predicted, probability).
        (A `wandb.Table` logged to a run stores an image cell as the string "Image", so the strips are
        logged as images.)"""
        import wandb

        from tempo.analysis.visualize import frame_indices, to_uint8

        names = self._class_names(trainer)
        batch = next(iter(trainer.datamodule.val_dataloader()))
        video = batch["video"][: self.clips].to(pl_module.device)
        video = pl_module.on_after_batch_transfer({"video": video}, 0)["video"]
        was_training = pl_module.training
        pl_module.eval()
        probs = pl_module.network(video)["logits"].float().softmax(-1).cpu()
        pl_module.train(was_training)
        table = wandb.Table(columns=["clip", "true", "predicted", "probability"])
        strips = []
        for i in range(video.shape[0]):
            frames = to_uint8(video[i], pl_module.mean, pl_module.std)
            strip = np.concatenate([frames[t] for t in frame_indices(frames.shape[0], 4)], axis=1)
            predicted = int(probs[i].argmax())
            true, probability = names[int(batch["label"][i])], float(probs[i, predicted])
            table.add_data(i, true, names[predicted], probability)
            strips.append(wandb.Image(strip, caption=f"{i}: {true} → {names[predicted]} ({probability:.2f})"))
        self.logger.experiment.log({"val/clips": strips, "val/clip_predictions": table})

    def on_test_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero or not self.scores:
            return
        import wandb

        names = self._class_names(trainer)
        result = self.result()
        valid = result["valid"]
        labels, predicted = result["labels"][valid], result["scores"][valid].argmax(1)
        matrix = confusion_matrix(labels, predicted, len(names))
        accuracy = per_class_accuracy(matrix)
        per_class = wandb.Table(columns=["class", "accuracy", "videos"],
                                data=[[n, None if np.isnan(a) else float(a), int(v)]
                                      for n, a, v in zip(names, accuracy, matrix.sum(1), strict=True)])
        png = plot_confusion(matrix, names, Path(trainer.default_root_dir) / "confusion.png", "test")
        self.logger.experiment.log({
            "test/confusion_matrix": wandb.plot.confusion_matrix(y_true=labels.tolist(), preds=predicted.tolist(),
                                                                 class_names=names),
            "test/confusion_png": wandb.Image(str(png)),
            "test/per_class_accuracy": per_class,
        })
