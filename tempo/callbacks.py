"""Run bookkeeping: per-epoch metric history, `summary.json` and the curves PNG."""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightning as L
import torch


def _floats(metrics: dict) -> dict[str, float]:
    out = {}
    for k, v in metrics.items():
        value = float(v.item() if isinstance(v, torch.Tensor) and v.numel() == 1 else v) \
            if isinstance(v, (torch.Tensor, int, float)) else None
        if value is not None and math.isfinite(value):
            out[k] = value
    return out


class MetricsHistory(L.Callback):
    """Keeps epoch-level metrics (train and val) whatever logger is configured."""

    def __init__(self):
        self.epochs: list[dict[str, float]] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        row = {k: v for k, v in _floats(trainer.callback_metrics).items() if not k.endswith("_step")}
        self.epochs.append({"epoch": trainer.current_epoch, "step": trainer.global_step, **row})

    def state_dict(self) -> dict:
        return {"epochs": self.epochs}

    def load_state_dict(self, state_dict: dict) -> None:
        # resuming restores the history; testing a best checkpoint must not truncate it
        saved = list(state_dict.get("epochs", []))
        if len(saved) > len(self.epochs):
            self.epochs = saved


def plot_curves(history: list[dict], path: Path) -> Path | None:
    """Train loss and train/val top-1 per epoch, side by side."""
    if not history:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    epochs = [h["epoch"] + 1 for h in history]
    for key, ax in (("train/loss_epoch", ax_loss), ("train/top1", ax_acc), ("val/top1", ax_acc),
                    ("val/mean_class", ax_acc)):
        ys = [h.get(key, float("nan")) for h in history]
        if any(math.isfinite(y) for y in ys):
            ax.plot(epochs, ys, marker="o", label=key)
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
