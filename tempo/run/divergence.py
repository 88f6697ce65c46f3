"""Stopping a diverging run: at the first non-finite loss, and before non-finite weights are saved.

`NonFiniteLossCheck` is what `RecognitionModule.training_step` calls after each loss: with
`every=1` it reads one flag per step (a device sync on an accelerator) and raises before that step's
update, so everything saved stays finite; with `every=N` the flags stay on the device and are read
every N steps and at the end of the epoch (before anything is saved); 0 turns it off. Under DDP the
decision is reduced over processes, so every process stops together. `TrainingDiverged.details`
goes to summary.json.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class TrainingDiverged(FloatingPointError):
    """The loss or the weights became non-finite; `details` goes to summary.json."""

    def __init__(self, message: str, details: dict):
        super().__init__(message)
        self.details = details


def check_finite_weights(module: nn.Module, step: int, epoch: int) -> None:
    """Raise before non-finite weights are evaluated or saved (one device sync)."""
    params = [p.detach() for p in module.parameters()]
    if params and not bool(torch.stack([p.isfinite().all() for p in params]).all()):
        bad = [name for name, p in module.named_parameters() if not p.detach().isfinite().all()]
        raise TrainingDiverged(
            f"the weights became non-finite by step {step} (epoch {epoch}; {len(bad)} tensors, e.g. {bad[:3]}); "
            "nothing was saved from this state. Lower optimizer.lr or set trainer.gradient_clip_val.",
            {"reason": "non-finite weights", "step": step, "epoch": epoch, "tensors": bad[:20]})


class NonFiniteLossCheck:
    """Raises `TrainingDiverged` naming the first non-finite loss's step, epoch, loss terms, batch
    indices and videos (`paths_of(indices)`)."""

    def __init__(self, every: int = 1):
        if every < 0:
            raise ValueError(f"module.finite_check_every={every} must be ≥ 0 (0: off, 1: every step, "
                             "N: every N steps)")
        self.every = every
        self.pending: list[tuple] = []  # steps whose loss was not checked yet (every > 1)

    def after_step(self, terms: dict, index, trainer, paths_of: Callable[[list[int]], list[str]]) -> None:
        if not self.every:
            return
        loss = terms["loss"].detach()
        if self.every == 1 and not self.pending and trainer.world_size == 1 and bool(torch.isfinite(loss)):
            return  # the common case, in one device read
        self.pending.append((trainer.global_step, trainer.current_epoch + 1, ~torch.isfinite(loss),
                             {name: value.detach() for name, value in terms.items()}, index))
        if len(self.pending) >= self.every:
            self.flush(trainer, paths_of)

    def flush(self, trainer, paths_of: Callable[[list[int]], list[str]]) -> None:
        """Read the pending steps' non-finite flags (one device sync) and raise at the first."""
        pending, self.pending = self.pending, []
        if not pending:
            return
        flags = pending[0][2].view(1) if len(pending) == 1 else torch.stack([p[2] for p in pending])
        bad = bool(flags.any())
        if trainer.world_size > 1:  # every process must stop together
            bad = trainer.strategy.reduce_boolean_decision(bad, all=False)
        if not bad:
            return
        first = next((p for p, flag in zip(pending, flags.tolist(), strict=True) if flag), pending[-1])
        step, epoch, _, terms, index = first  # on another process, this one's last checked step
        indices = [int(i) for i in index.tolist()] if index is not None else []
        paths = paths_of(indices)
        values = {name: float(value) for name, value in terms.items()}
        shown = ", ".join(f"{name}={value:.4g}" for name, value in values.items())
        raise TrainingDiverged(
            f"non-finite loss at step {step} (epoch {epoch}): {shown}. Batch (dataset indices on this "
            f"process): {indices}" + (f", videos: {paths}" if paths else "") + ". Nothing was saved from "
            "this state; the checkpoints on disk are from the last finite epoch. Lower optimizer.lr "
            "(or module.reference_batch_size scaling) or set trainer.gradient_clip_val.",
            {"reason": "non-finite loss", "step": step, "epoch": epoch, "loss_terms": values,
             "indices": indices, "videos": paths})
