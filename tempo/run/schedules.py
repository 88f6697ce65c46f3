"""Learning-rate schedules: an optional linear warm-up, then a decay, built from torch's own
schedulers (`LinearLR` → `CosineAnnealingLR` / `MultiStepLR` / `StepLR` in a `SequentialLR`), or
`ReduceLROnPlateau` on a validation metric (`Plateau`, stepped by Lightning with the metric's value).

The config describes the decay in epochs (`MultiStep`, `Step`, `Cosine` below); the
scheduler is sized from what Lightning will actually run (`trainer.estimated_stepping_batches`,
which accounts for `max_epochs`, `max_steps`, `limit_train_batches`, devices and gradient
accumulation) and stepped per epoch or per optimiser step (`interval`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import lightning as L
from torch.optim import Optimizer
from torch.optim.lr_scheduler import (
    CosineAnnealingLR,
    LinearLR,
    LRScheduler,
    MultiStepLR,
    ReduceLROnPlateau,
    SequentialLR,
    StepLR,
)

log = logging.getLogger(__name__)


@dataclass
class Span:
    """How long things are, in scheduler steps (epochs or optimiser steps)."""

    per_epoch: float  # scheduler steps per epoch: 1 (epoch interval) or optimiser steps per epoch
    total: int  # scheduler steps the run will take
    warmup: int  # of which warm-up

    def steps(self, epochs: float) -> int:
        return int(round(epochs * self.per_epoch))


@dataclass
class MultiStep:
    """LR × gamma at each milestone epoch."""

    milestones: Sequence[float]
    gamma: float = 0.1

    def build(self, optimizer: Optimizer, span: Span) -> LRScheduler:
        # the decay's own counter starts after the warm-up: milestones stay in run epochs
        return MultiStepLR(optimizer, [max(span.steps(m) - span.warmup, 0) for m in self.milestones], self.gamma)

    def describe(self) -> str:
        return f"multistep ×{self.gamma:g} at epochs {list(self.milestones)}"


@dataclass
class Step:
    """LR × gamma every `step_size` epochs."""

    step_size: float
    gamma: float = 0.1

    def build(self, optimizer: Optimizer, span: Span) -> LRScheduler:
        return StepLR(optimizer, max(1, span.steps(self.step_size)), self.gamma)

    def describe(self) -> str:
        return f"step ×{self.gamma:g} every {self.step_size:g} epochs"


@dataclass
class Cosine:
    """Cosine decay from the LR to `min_factor` × LR over the run (after the warm-up).

    total_epochs: length of the decay; null (default) = the run as Lightning will run it.
    `min_factor` is relative to the main LR; groups with an LR multiplier (biases) end at the
    same absolute LR (torch's `eta_min` is one number).
    """

    min_factor: float = 0.0
    total_epochs: float | None = None

    def build(self, optimizer: Optimizer, span: Span) -> LRScheduler:
        total = span.steps(self.total_epochs) if self.total_epochs and self.total_epochs > 0 else span.total
        length = total - span.warmup  # < 1: the warm-up covers the run (`describe` says so)
        eta_min = self.min_factor * optimizer.param_groups[0]["initial_lr"]
        return CosineAnnealingLR(optimizer, T_max=max(length, 1), eta_min=eta_min)

    def describe(self) -> str:
        return f"cosine to {self.min_factor:g}×"


@dataclass
class Plateau:
    """LR × `factor` once `monitor` has not improved (by more than `threshold`, relative) for `patience`
    validations; then `cooldown` validations without counting; never below `min_lr` (absolute).

    torch's `ReduceLROnPlateau`, stepped by Lightning after each validation with the metric's value. Its
    checkpoint state (best value, bad-epoch count, cooldown left, last LRs) is plain numbers, so a resumed
    run continues the count. No warm-up; interval epoch only.
    """

    monitor: str = "val/top1"
    mode: str = "max"
    factor: float = 0.1
    patience: int = 5
    cooldown: int = 0
    min_lr: float = 0.0
    threshold: float = 1e-4

    def build(self, optimizer: Optimizer, span: Span) -> PlateauSchedule:
        if not 0 < self.factor < 1:
            raise ValueError(f"schedule.factor.factor must be in (0, 1), got {self.factor}")
        if span.warmup:
            raise ValueError("schedule=plateau has no warm-up: set schedule.warmup_epochs=0")
        return PlateauSchedule(optimizer, mode=self.mode, factor=self.factor, patience=self.patience,
                               threshold=self.threshold, cooldown=self.cooldown, min_lr=self.min_lr)

    def describe(self) -> str:
        return (f"plateau ×{self.factor:g} after {self.patience} validations without {self.mode} "
                f"{self.monitor} improving (cooldown {self.cooldown}, min LR {self.min_lr:g})")


class PlateauSchedule(ReduceLROnPlateau):
    """`ReduceLROnPlateau` stepped by `PlateauStep` right after each validation, before any checkpoint of that
    epoch is written (Lightning's own plateau step comes after the checkpoint, so a resumed run would miss
    one validation's count); Lightning's call at the epoch's end does nothing."""

    def step(self, metrics=None, epoch=None) -> None:  # noqa: ARG002 - Lightning's call: stepped already
        return None

    def step_after_validation(self, value: float) -> None:
        super().step(value)


class PlateauStep(L.Callback):
    """Steps every `PlateauSchedule` of the run with its monitored metric after each validation (not the
    sanity check). Lightning runs checkpoint callbacks last, so the checkpoint holds the new count."""

    def __init__(self, monitor: str):
        self.monitor = monitor

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        schedules = [c.scheduler for c in trainer.lr_scheduler_configs if isinstance(c.scheduler, PlateauSchedule)]
        if schedules and self.monitor not in trainer.callback_metrics:
            raise ValueError(f"schedule=plateau follows {self.monitor!r}, which validation did not log (logged: "
                             f"{sorted(trainer.callback_metrics)}); set schedule.factor.monitor")
        for schedule in schedules:
            schedule.step_after_validation(float(trainer.callback_metrics[self.monitor]))


class RunSchedule(SequentialLR):
    """Warm-up + decay. Its checkpoint holds only the step count: resuming rebuilds the
    schedule from the config (sized for the run being resumed) and replays it to that step,
    so checkpoints stay loadable with `weights_only=True` and never carry a stale length."""

    def __init__(self, optimizer: Optimizer, build: Callable[[], tuple[list[LRScheduler], list[int]]]):
        self._build = build
        self._base_lrs = [group["lr"] for group in optimizer.param_groups]
        schedulers, milestones = build()
        super().__init__(optimizer, schedulers, milestones)

    def state_dict(self) -> dict:
        return {"last_epoch": self.last_epoch}

    def load_state_dict(self, state_dict: dict) -> None:
        target = int(state_dict["last_epoch"])
        for group, lr in zip(self.optimizer.param_groups, self._base_lrs, strict=True):
            group["lr"] = group["initial_lr"] = lr  # the optimiser's checkpoint holds the last LR
        schedulers, milestones = self._build()
        super().__init__(self.optimizer, schedulers, milestones)
        while self.last_epoch < target:
            self.step()


def run_span(trainer, interval: str, warmup_epochs: float) -> Span:
    """Scheduler steps of the run Lightning will actually do."""
    if trainer.train_dataloader is None:
        trainer.fit_loop.setup_data()  # sizes the train loader (max_epochs=-1 would skip it)
    total_steps = trainer.estimated_stepping_batches
    batches = trainer.num_training_batches
    if not math.isfinite(total_steps):
        raise ValueError("the number of training steps is unknown (an iterable dataset without "
                         "trainer.max_steps); set trainer.max_steps so the LR schedule can be sized")
    steps_per_epoch = max(1, math.ceil(batches / trainer.accumulate_grad_batches)) \
        if math.isfinite(batches) else int(total_steps)
    if interval == "step":
        per_epoch, total = steps_per_epoch, int(total_steps)
    else:
        per_epoch, total = 1, max(1, math.ceil(total_steps / steps_per_epoch))
    return Span(per_epoch=per_epoch, total=total, warmup=int(round(warmup_epochs * per_epoch)))


def build_scheduler(optimizer: Optimizer, factor: MultiStep | Step | Cosine | Plateau, span: Span,
                    warmup_start_factor: float = 0.1, interval: str = "epoch", val_every: int = 1) -> dict:
    """A Lightning `lr_scheduler` config dict for `factor` (the decay) after `span.warmup` steps
    of linear warm-up from `warmup_start_factor` × LR. A `Plateau` is stepped every `val_every`
    epochs (`trainer.check_val_every_n_epoch`), when its metric is there."""
    if interval not in ("epoch", "step"):
        raise ValueError(f"schedule.interval must be 'epoch' or 'step', got {interval!r}")
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
    if isinstance(factor, Plateau):
        if interval != "epoch":
            raise ValueError("schedule=plateau steps after each validation: set schedule.interval=epoch")
        if val_every < 1:
            raise ValueError(f"schedule=plateau follows {factor.monitor}, but validation is off "
                             "(trainer.limit_val_batches=0): enable validation or choose another schedule")
        return {"scheduler": factor.build(optimizer, span), "interval": "epoch", "frequency": val_every,
                "monitor": factor.monitor, "strict": True}

    def build() -> tuple[list[LRScheduler], list[int]]:
        decay = factor.build(optimizer, span)
        if span.warmup <= 0:
            return [decay], []
        warmup = LinearLR(optimizer, start_factor=warmup_start_factor, end_factor=1.0, total_iters=span.warmup)
        return [warmup, decay], [span.warmup]

    scheduler = RunSchedule(optimizer, build)
    return {"scheduler": scheduler, "interval": interval, "frequency": 1}


def describe(factor, span: Span, interval: str, warmup_start_factor: float) -> str:
    unit = "steps" if interval == "step" else "epochs"
    warm = f", linear warm-up over {span.warmup} {unit} from {warmup_start_factor:g}×" if span.warmup else ""
    if span.warmup >= span.total:  # e.g. every 1-epoch run with the default 1-epoch warm-up: said once, not warned
        warm += " covering the whole run: no decay (schedule.warmup_epochs= shortens it)"
    return f"schedule: {factor.describe()} over {span.total} {unit} (stepped per {interval}){warm}"
