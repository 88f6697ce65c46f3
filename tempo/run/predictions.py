"""Per-video test predictions: collected from Lightning's test loop, written as CSV, confusion matrix PNG.

`PredictionCollector` keeps the view-averaged scores `RecognitionModule.test_step` returns, with the
labels and dataset indices of the batch; the rest turns them into per-class accuracy, a confusion
matrix, `predictions.csv` and `confusion.png`.
"""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
import numpy as np
import torch

FULL_MATRIX_MAX_CLASSES = 30  # above this the PNG adds the most-confused pairs beside the unlabelled matrix
TOP_PAIRS = 20


class PredictionCollector(L.Callback):
    """Scores (N, K), labels, dataset indices and validity of every test sample. Under DDP each
    process tests its own share; at the end of the test epoch every process holds all of them,
    in dataset-index order."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.scores, self.labels, self.indices, self.valid = [], [], [], []

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self.reset()

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if not isinstance(outputs, dict) or "scores" not in outputs:
            return
        n = batch["label"].shape[0]
        self.scores.append(outputs["scores"].float().cpu())
        self.labels.append(batch["label"].cpu())
        self.indices.append(batch["index"].cpu() if "index" in batch else torch.arange(n))
        self.valid.append(batch["valid"].cpu() if "valid" in batch else torch.ones(n, dtype=torch.bool))

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        if trainer.world_size <= 1:
            return
        # every process takes part in the gathers, also one whose share was empty
        local = self.result() if self.scores else {
            "scores": torch.zeros(0, pl_module.num_classes), "labels": torch.zeros(0, dtype=torch.long),
            "indices": torch.zeros(0, dtype=torch.long), "valid": torch.zeros(0, dtype=torch.bool)}
        local["valid"] = local["valid"].to(torch.uint8)  # all_gather backends do not all take bool
        shared = {k: gather_uneven(v.to(pl_module.device), pl_module.all_gather).cpu() for k, v in local.items()}
        order = torch.argsort(shared["indices"], stable=True)
        self.scores, self.labels, self.indices = [shared["scores"][order]], [shared["labels"][order]], \
            [shared["indices"][order]]
        self.valid = [shared["valid"][order].bool()]

    def result(self) -> dict[str, torch.Tensor]:
        if not self.scores:
            raise RuntimeError("no test predictions were collected (did the test loop run?)")
        return {"scores": torch.cat(self.scores), "labels": torch.cat(self.labels),
                "indices": torch.cat(self.indices), "valid": torch.cat(self.valid)}


def gather_uneven(tensor: torch.Tensor, all_gather) -> torch.Tensor:
    """Every process's `tensor` concatenated along dim 0, in rank order, when their lengths differ
    (an unrepeated sampler gives ranks different shares). `all_gather(x)` returns (world, *x.shape)."""
    counts = all_gather(torch.tensor([tensor.shape[0]], device=tensor.device)).view(-1).tolist()
    padded = torch.cat([tensor, tensor.new_zeros((max(counts) - tensor.shape[0], *tensor.shape[1:]))])
    gathered = all_gather(padded)
    return torch.cat([gathered[rank, :n] for rank, n in enumerate(counts)])


def confusion_matrix(labels: torch.Tensor, predicted: torch.Tensor, num_classes: int) -> np.ndarray:
    """Counts (K, K): row = true class, column = predicted class."""
    flat = labels.long() * num_classes + predicted.long()
    return torch.bincount(flat, minlength=num_classes * num_classes).view(num_classes, num_classes).numpy()


def per_class_accuracy(matrix: np.ndarray) -> np.ndarray:
    """Recall of each class (NaN for a class without test videos)."""
    totals = matrix.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, np.diag(matrix) / np.maximum(totals, 1), np.nan)


def most_confused(matrix: np.ndarray, class_names: list[str], count: int = TOP_PAIRS) -> list[dict]:
    """The off-diagonal cells with the largest row-normalised rate."""
    rates = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    off = rates.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(off, axis=None)[::-1][:count]
    pairs = []
    for flat in order:
        t, p = divmod(int(flat), matrix.shape[0])
        if off[t, p] <= 0:
            break
        pairs.append({"true": class_names[t], "predicted": class_names[p], "rate": float(off[t, p]),
                      "videos": int(matrix[t, p])})
    return pairs


def write_predictions(path: Path, result: dict, paths: list[str], class_names: list[str], k: int = 5) -> Path:
    """One row per test video: path, label, valid, then the top-k classes with their scores."""
    k = min(k, result["scores"].shape[1])
    values, classes = result["scores"].topk(k, dim=1)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        ranked = (f"{kind}{i + 1}" for i in range(k) for kind in ("class", "score"))
        writer.writerow(["video", "label", "valid", *ranked])
        for n in range(len(result["labels"])):
            index = int(result["indices"][n])
            row = [paths[index] if index < len(paths) else str(index), class_names[int(result["labels"][n])],
                   int(bool(result["valid"][n]))]
            for c, v in zip(classes[n].tolist(), values[n].tolist(), strict=True):
                row += [class_names[c], f"{v:.6f}"]
            writer.writerow(row)
    return path


def plot_confusion(matrix: np.ndarray, class_names: list[str], path: Path, title: str) -> Path:
    """Row-normalised confusion matrix. Up to FULL_MATRIX_MAX_CLASSES classes: every cell labelled by
    class name; more: the matrix without names beside a bar chart of the most-confused pairs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = matrix.shape[0]
    rates = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    if k <= FULL_MATRIX_MAX_CLASSES:
        size = max(4.5, 0.45 * k + 2.5)
        fig, ax = plt.subplots(figsize=(size + 1, size))
        image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(k), class_names, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(k), class_names, fontsize=8)
        if k <= 16:
            for t in range(k):
                for p in range(k):
                    if matrix[t, p]:
                        ax.text(p, t, f"{rates[t, p]:.2f}", ha="center", va="center", fontsize=7,
                                color="white" if rates[t, p] > 0.5 else "black")
        ax.set(xlabel="predicted", ylabel="true", title=title)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    else:
        pairs = most_confused(matrix, class_names)
        fig, (ax, bars) = plt.subplots(1, 2, figsize=(18, 8), gridspec_kw={"width_ratios": [1, 1.1]})
        image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
        ax.set(xlabel="predicted class (index)", ylabel="true class (index)", title=f"{title} ({k} classes)")
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        labels = [f"{p['true'][:40]} → {p['predicted'][:40]}" for p in pairs][::-1]
        bars.barh(range(len(pairs)), [p["rate"] for p in pairs][::-1], color="tab:red")
        bars.set_yticks(range(len(pairs)), labels, fontsize=8)
        bars.set(xlabel="fraction of the true class's videos", title=f"{len(pairs)} most-confused pairs")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
