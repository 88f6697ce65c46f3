"""Learning-rate schedules as factor functions of training progress in epochs (float),
with an optional linear warm-up; stepped per epoch or per optimiser step."""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


@dataclass
class MultiStep:
    milestones: Sequence[float]
    gamma: float = 0.1

    def __call__(self, epoch: float) -> float:
        return self.gamma ** bisect.bisect_right(sorted(self.milestones), epoch)


@dataclass
class Step:
    step_size: float
    gamma: float = 0.1

    def __call__(self, epoch: float) -> float:
        return self.gamma ** math.floor(epoch / self.step_size)


@dataclass
class Cosine:
    total_epochs: float
    min_factor: float = 0.0

    def __call__(self, epoch: float) -> float:
        progress = min(epoch / max(self.total_epochs, 1e-8), 1.0)
        return self.min_factor + (1 - self.min_factor) * 0.5 * (1 + math.cos(math.pi * progress))


@dataclass
class Warmup:
    """Linear ramp from `start_factor` to 1 over `epochs`, then `after`.

    `steps_per_unit` converts the scheduler's counter to epochs (1 when stepped per
    epoch, batches per epoch when stepped per step).
    """

    after: MultiStep | Step | Cosine
    epochs: float = 0.0
    start_factor: float = 0.1
    steps_per_unit: float = 1.0

    def __call__(self, count: int) -> float:
        epoch = count / self.steps_per_unit
        factor = self.after(epoch)
        if epoch < self.epochs:
            factor *= self.start_factor + (1 - self.start_factor) * epoch / self.epochs
        return factor


class FactorLR(LambdaLR):
    """LambdaLR whose checkpoint holds only counters: the factor is rebuilt from the config,
    so checkpoints stay loadable with `weights_only=True`."""

    def state_dict(self) -> dict:
        state = super().state_dict()
        state["lr_lambdas"] = [None] * len(self.lr_lambdas)
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        state = {k: v for k, v in state_dict.items() if k != "lr_lambdas"}
        self.__dict__.update(state)


def build_scheduler(optimizer: Optimizer, factor, steps_per_epoch: int, warmup_epochs: float = 0.0,
                    warmup_start_factor: float = 0.1, interval: str = "epoch") -> dict:
    """A Lightning `lr_scheduler` config dict."""
    if interval not in ("epoch", "step"):
        raise ValueError(f"schedule.interval must be 'epoch' or 'step', got {interval!r}")
    per_unit = steps_per_epoch if interval == "step" else 1
    lam = Warmup(factor, warmup_epochs, warmup_start_factor, max(per_unit, 1))
    return {"scheduler": FactorLR(optimizer, lam), "interval": interval, "frequency": 1}
