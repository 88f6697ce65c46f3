"""Metrics of `RecognitionModule`: accuracy of the main logits, of any per-branch logits a
network returns, counters summed over processes, and the epoch means of the training loss terms.

All are torchmetrics, registered as submodules, so they follow the module's device and
synchronise over DDP when computed.
"""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics import Metric, MetricCollection, SumMetric
from torchmetrics.classification import MulticlassAccuracy


def accuracy_metrics(num_classes: int) -> MetricCollection:
    return MetricCollection({
        "top1": MulticlassAccuracy(num_classes, top_k=1, average="micro"),
        "top5": MulticlassAccuracy(num_classes, top_k=min(5, num_classes), average="micro"),
        "mean_class": MulticlassAccuracy(num_classes, top_k=1, average="macro"),
    }, compute_groups=False)  # grouping is inferred from the first batch; wrong when it is tiny


class BranchAccuracy(nn.Module):
    """Top-1 of each named branch (`outputs["branch_logits"]`), logged as `<prefix>top1_<name>`.

    A metric is created the first time a branch name is seen, so any network can add branches
    without the module knowing them.
    """

    def __init__(self, num_classes: int, prefix: str):
        super().__init__()
        self.num_classes = num_classes
        self.prefix = prefix
        self.metrics = nn.ModuleDict()

    def key(self, branch: str) -> str:
        return f"top1_{branch}".replace(".", "_")  # ModuleDict keys cannot hold dots

    def update(self, branches: dict[str, torch.Tensor], labels: torch.Tensor, keep) -> None:
        for branch, scores in branches.items():
            key = self.key(branch)
            if key not in self.metrics:
                metric = MulticlassAccuracy(self.num_classes, top_k=1, average="micro")
                self.metrics[key] = metric.to(scores.device)
            if len(labels):  # created even so: every process must compute the same metrics
                self.metrics[key].update(scores[keep], labels)

    def compute(self) -> dict[str, torch.Tensor]:
        return {f"{self.prefix}{key}": metric.compute() for key, metric in self.metrics.items()}

    def reset(self) -> None:
        for metric in self.metrics.values():
            metric.reset()


class ProcessSums(nn.Module):
    """Per-process counts (plain ints, counted on the host: no device sync per step) summed over
    every process once per epoch through a torchmetrics `SumMetric` each."""

    def __init__(self, names: tuple[str, ...]):
        super().__init__()
        self.local = dict.fromkeys(names, 0)
        self.sums = nn.ModuleDict({name: SumMetric() for name in names})

    def add(self, name: str, count: int) -> None:
        self.local[name] += int(count)

    def total(self, name: str) -> int:
        """Sum of `name` over all processes since its last `total` (a collective under DDP:
        every process must call it)."""
        metric = self.sums[name]
        metric.update(torch.tensor(float(self.local[name]), device=metric.device))
        value = int(round(float(metric.compute())))
        metric.reset()
        self.local[name] = 0
        return value


class EpochMean(Metric):
    """Batch-size-weighted mean of a scalar over an epoch (a training loss term), accumulated on
    the device with no host sync, plus the latest step's value as a host tensor for loggers and
    the progress bar.

    Logged as a Metric object (`self.log(name, metric, on_step=True, on_epoch=True)`): Lightning
    reads `_forward_cache` for `<name>_step` and computes (summed over processes) and resets the
    metric at the epoch's end for `<name>_epoch`. `_forward_cache` is refreshed only by
    `step_value_to_host`, which the module calls on the steps that reach the loggers; it stays on
    the host when Lightning moves the metric to the device, so the progress bar's per-step read of
    it never waits for the accelerator.
    """

    full_state_update = False
    higher_is_better = False
    is_differentiable = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("total", torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("weight", torch.tensor(0.0), dist_reduce_fx="sum")
        self.last: torch.Tensor | None = None

    def update(self, value: torch.Tensor, weight: int) -> None:
        value = value.detach()
        self.total.add_(value, alpha=weight)
        self.weight.add_(weight)
        self.last = value

    def compute(self) -> torch.Tensor:
        return self.total / self.weight

    def step_value_to_host(self) -> None:
        """The latest step's value → `_forward_cache`, on the host (one device sync)."""
        if self.last is not None:
            self._forward_cache = self.last.cpu()

    def _apply(self, fn, *args, **kwargs):
        cache = self._forward_cache
        this = super()._apply(fn, *args, **kwargs)
        this._forward_cache = cache  # stays on the host: see the class docstring
        if this.last is not None:
            this.last = fn(this.last)
        return this


class EpochMeans(nn.Module):
    """One `EpochMean` per named term (each loss term a network's loss returns), created the
    first time a name is seen, so any loss can add terms without the module knowing them."""

    def __init__(self):
        super().__init__()
        self.metrics = nn.ModuleDict()
        self.names: dict[str, str] = {}  # term name → ModuleDict key (no dots)

    def update(self, values: dict[str, torch.Tensor], weight: int) -> bool:
        """Add a step's values; True when a term was seen for the first time."""
        new = False
        for name, value in values.items():
            key = self.names.get(name)
            if key is None:
                key = self.names[name] = name.replace(".", "_")
                self.metrics[key] = EpochMean().to(value.device)
                new = True
            self.metrics[key].update(value, weight)
        return new

    def items(self):
        """(term name, metric, the metric's attribute path below this module)."""
        return [(name, self.metrics[key], f"metrics.{key}") for name, key in self.names.items()]


def running_states(metrics: dict[str, Metric]) -> dict[str, dict[str, torch.Tensor]]:
    """The accumulated states of epoch metrics, for a checkpoint saved in the middle of an epoch."""
    return {name: {k: v.detach().cpu().clone() for k, v in m.metric_state.items() if isinstance(v, torch.Tensor)}
            for name, m in metrics.items() if m.update_called}


def restore_running_states(metrics: dict[str, Metric], states: dict[str, dict[str, torch.Tensor]]) -> None:
    """Put `running_states` back, so the resumed epoch's means cover the batches before the stop."""
    for name, state in states.items():
        metric = metrics[name]
        for key, value in state.items():
            setattr(metric, key, value.to(getattr(metric, key).device))
        metric._update_count = max(metric._update_count, 1)  # torchmetrics' "update was called" flag
