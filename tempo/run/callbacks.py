"""Run bookkeeping: checkpoints, per-epoch metric history and console line, `summary.json`,
the curves PNG, and the display of epoch numbers.

Epochs are numbered from 1 wherever users read them (progress bar, console line, checkpoint
names, `summary.json`, the plot): "epoch 3" is the third epoch. Lightning's own counter
(`trainer.current_epoch`, the `epoch` key inside a `.ckpt`) stays 0-based.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import (
    LearningRateMonitor,
    ModelCheckpoint,
    ModelSummary,
    RichProgressBar,
    TQDMProgressBar,
)
from lightning.pytorch.utilities.model_summary.model_summary import _format_summary_table

from tempo.data.resumable import epoch_progress

log = logging.getLogger(__name__)


# hooks Lightning calls on every callback once per batch
BATCH_HOOKS = ("on_train_batch_start", "on_before_zero_grad", "on_before_backward", "on_after_backward",
               "on_before_optimizer_step", "on_train_batch_end", "on_validation_batch_start",
               "on_validation_batch_end", "on_test_batch_start", "on_test_batch_end")


def skip_unused_batch_hooks(cls: type) -> type:
    """Class decorator: the per-batch hooks `cls` leaves as `Callback`'s no-ops become None.
    Lightning calls a callback's hook only when it is callable, and each call of even a no-op
    costs ~5–10 µs (a profiler context, the callback's state key); with tempo's six or so
    callbacks that was ~0.2–0.4 ms of every training step."""
    for hook in BATCH_HOOKS:
        if getattr(cls, hook) is getattr(L.Callback, hook):
            setattr(cls, hook, None)
    return cls


def _floats(metrics: dict) -> dict[str, float]:
    out = {}
    for k, v in metrics.items():
        value = float(v.item() if isinstance(v, torch.Tensor) and v.numel() == 1 else v) \
            if isinstance(v, (torch.Tensor, int, float)) else None
        if value is not None and math.isfinite(value):
            out[k] = value
    return out


@skip_unused_batch_hooks
class RunCheckpoint(ModelCheckpoint):
    """`ModelCheckpoint` whose `last.ckpt` is the state at the end of every epoch (Lightning
    rewrites it only with a new best), named with 1-based epochs, and that reloads its best
    score when a run resumes in its folder."""

    def _monitor_candidates(self, trainer: L.Trainer) -> dict:
        candidates = super()._monitor_candidates(trainer)
        candidates["epoch"] = torch.tensor(trainer.current_epoch + 1)  # names: best-epoch001 = epoch 1
        return candidates

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        # saving only at epoch ends (tempo's default): Lightning's per-step checks cost ~20-70 µs a step
        if self._every_n_train_steps >= 1 or self._train_time_interval is not None:
            # not at an epoch's last step: the epoch-end checkpoint, after validation, follows (resuming
            # from a save before it, Lightning skips that epoch's validation and epoch-end hooks)
            done, epoch_batches = epoch_progress(trainer)
            if done < epoch_batches:
                super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        saved = self._last_global_step_saved == trainer.global_step
        if self.save_last and not saved and not trainer.sanity_checking and not trainer.fast_dev_run:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def load_state_dict(self, state_dict: dict) -> None:
        if state_dict.get("dirpath", self.dirpath) != self.dirpath:
            # a checkpoint from another folder: its best is not ours to replace or delete
            log.info("resuming from a checkpoint saved in %s: best-checkpoint tracking starts afresh in %s",
                     state_dict.get("dirpath"), self.dirpath)
            return
        super().load_state_dict(state_dict)


@skip_unused_batch_hooks
class MetricsHistory(L.Callback):
    """Keeps epoch-level metrics (train and val) whatever logger is configured, and prints
    one plain line per epoch (it survives `| tee log` and lands in the run's train.log)."""

    KEYS = ("train/loss_epoch", "train/top1", "val/top1", "val/top5", "val/mean_class")

    def __init__(self, print_lines: bool = True):
        self.epochs: list[dict[str, float]] = []
        self.print_lines = print_lines
        self._started = time.time()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._started = time.time()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        row = {k: v for k, v in _floats(trainer.callback_metrics).items() if not k.endswith("_step")}
        row = {"epoch": trainer.current_epoch + 1, "step": trainer.global_step, **row}
        self.epochs.append(row)
        if self.print_lines and trainer.is_global_zero:
            log.info(self.line(row, trainer, time.time() - self._started))

    def line(self, row: dict, trainer: L.Trainer, seconds: float) -> str:
        total = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else "?"
        shown = [k for k in self.KEYS if k in row] + sorted(k for k in row if k.startswith("val/top1_"))
        values = "  ".join(f"{k.removesuffix('_epoch')} {row[k]:.4f}" for k in shown)
        lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else float("nan")
        return f"epoch {row['epoch']}/{total}  step {row['step']}  {values}  lr {lr:.4g}  ({seconds:.1f} s)"

    def state_dict(self) -> dict:
        return {"epochs": self.epochs}

    def load_state_dict(self, state_dict: dict) -> None:
        # resuming restores the history; testing a best checkpoint must not truncate it
        saved = list(state_dict.get("epochs", []))
        if len(saved) > len(self.epochs):
            self.epochs = saved


class ReadsAtARate:
    """Progress-bar mixin: a training step only records its number; the bar reads the step count
    and the metrics (and redraws) at most `reads_per_s` times a second, and at the epoch's end.
    Lightning's bars do it after every step: ~0.5–1 ms of Python per step, all of it holding the
    interpreter, for a display nobody reads faster than a few times a second."""

    reads_per_s: float = 4.0
    clock = staticmethod(time.monotonic)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        self._steps_done = batch_idx + 1
        now = self.clock()
        if now < getattr(self, "_next_read", 0.0):
            return
        self._next_read = now + 1 / self.reads_per_s if self.reads_per_s > 0 else math.inf
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._show_steps(getattr(self, "_steps_done", 0))  # the steps since the last read
        self._next_read = 0.0
        super().on_train_epoch_end(trainer, pl_module)

    def _show_steps(self, done: int) -> None:
        raise NotImplementedError


@skip_unused_batch_hooks
class EpochRichProgressBar(ReadsAtARate, RichProgressBar):
    """Rich bar that shows "Epoch 3/12" for the third of twelve epochs, drawn `refresh_rate` times a
    second. A draw costs ~2 ms of Python (holding the interpreter, from Rich's refresh thread);
    Lightning's default rate, 100, drew after almost every step."""

    def __init__(self, refresh_rate: int = 2, **kwargs):
        super().__init__(refresh_rate=refresh_rate, **kwargs)
        self.reads_per_s = refresh_rate

    def _get_train_description(self, current_epoch: int) -> str:
        total = self.trainer.max_epochs
        return f"Epoch {current_epoch + 1}" + (f"/{total}" if total and total > 0 else "")

    def _show_steps(self, done: int) -> None:
        if self.is_enabled and self.train_progress_bar_id is not None:
            self._update(self.train_progress_bar_id, done)


@skip_unused_batch_hooks
class EpochTQDMProgressBar(ReadsAtARate, TQDMProgressBar):
    """TQDM bar with 1-based epochs (used when Rich is not configured), read `reads_per_s` times a
    second (Lightning's redraws after every step)."""

    def __init__(self, reads_per_s: float = 4.0, **kwargs):
        super().__init__(**kwargs)
        self.reads_per_s = reads_per_s

    def on_train_epoch_start(self, trainer: L.Trainer, *args) -> None:
        super().on_train_epoch_start(trainer, *args)
        total = trainer.max_epochs
        self.train_progress_bar.set_description(
            f"Epoch {trainer.current_epoch + 1}" + (f"/{total}" if total and total > 0 else ""))

    def _show_steps(self, done: int) -> None:
        bar = self._train_progress_bar  # None before the first epoch starts
        if bar is not None and not bar.disable:
            bar.n = done
            bar.refresh()


@skip_unused_batch_hooks
class StepLearningRateMonitor(LearningRateMonitor):
    """Lightning's `LearningRateMonitor` without the calls of its unused per-batch hooks."""


@skip_unused_batch_hooks
class ParamSummary(ModelSummary):
    """Lightning's parameter table without its FLOPs, which it counts as 0 for these networks
    (`python -m tempo.profile` counts them)."""

    @staticmethod
    def summarize(summary_data, total_parameters, trainable_parameters, model_size, total_training_modes,
                  total_flops, **summarize_kwargs) -> None:
        columns = [c for c in summary_data if c[0] != "FLOPs"]
        table = _format_summary_table(total_parameters, trainable_parameters, model_size, total_training_modes,
                                      total_flops, *columns)
        log.info("\n" + table.rsplit("\n", 1)[0])  # the last line is "Total Flops"


# distinct styles: val/top1 and val/mean_class are often equal on balanced sets
CURVE_STYLES = {
    "train/loss_epoch": {"marker": "o"},
    "train/top1": {"marker": "^", "linestyle": ":"},
    "val/top1": {"marker": "o", "linestyle": "-", "linewidth": 2.2},
    "val/mean_class": {"marker": "s", "linestyle": "--", "markerfacecolor": "none", "markersize": 8},
}


def plot_curves(history: list[dict], path: Path) -> Path | None:
    """Train loss and train/val accuracy per (1-based) epoch, side by side."""
    if not history:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    epochs = [h["epoch"] for h in history]
    for key, ax in (("train/loss_epoch", ax_loss), ("train/top1", ax_acc), ("val/top1", ax_acc),
                    ("val/mean_class", ax_acc)):
        ys = [h.get(key, float("nan")) for h in history]
        if any(math.isfinite(y) for y in ys):
            ax.plot(epochs, ys, label=key, **CURVE_STYLES[key])
    ax_loss.set(xlabel="epoch", ylabel="loss", title="training loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy", ylim=(0, 1))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_summary(path: Path, summary: dict) -> Path:
    path.write_text(json.dumps(summary, indent=2, default=str))
    return path
