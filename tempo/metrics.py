"""Evaluation metrics of `RecognitionModule`: accuracy of the main logits, of any per-branch
logits a network returns, and counters summed over processes.

All are torchmetrics, registered as submodules, so they follow the module's device and
synchronise over DDP when computed.
"""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics import MetricCollection, SumMetric
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
