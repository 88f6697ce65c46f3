"""A `RecognitionModule` around a network that reads its logits from the clip, so a test decides every
view's scores; ready-made batches and a quiet CPU trainer (test_module, test_schedules, test_loop_overhead)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader

from tempo.run.module import RecognitionModule

K = 3


class LogitsInVideo(nn.Module):
    """Reads its logits from the clip (pixel (0, 0, 0) of the first K channels), so a test
    decides every view's scores; branch "neg" = −logits, "same" = logits."""

    def __init__(self, num_classes: int = K):
        super().__init__()
        self.num_classes = num_classes
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, video: torch.Tensor) -> dict:
        logits = video[:, : self.num_classes, 0, 0, 0] * self.scale
        out = {"logits": logits, "branch_logits": {"neg": -logits, "same": logits.clone()},
               "attention": {"map": video[:, :1]}}
        if self.training:
            out["aux_logits"] = logits * 0.5
            out["regularizers"] = {"l2": self.scale.square()}
        return out


def make_module(**kwargs) -> RecognitionModule:
    kwargs.setdefault("optimizer", partial(torch.optim.SGD, lr=0.1))
    return RecognitionModule(network=kwargs.pop("network", LogitsInVideo()), num_classes=K, **kwargs)


def clips(logits: torch.Tensor, shape=(4, 2, 2)) -> torch.Tensor:
    """(..., K) logits → float clips (..., C=K, T, H, W) carrying them at pixel (0, 0, 0)."""
    video = torch.zeros(*logits.shape, *shape)
    video[..., 0, 0, 0] = logits
    return video


def batch(logits, labels, valid=None) -> dict:
    labels = torch.as_tensor(labels)
    out = {"video": clips(logits), "label": labels, "index": torch.arange(len(labels))}
    if valid is not None:
        out["valid"] = torch.as_tensor(valid)
    return out


def batches(*items: dict) -> DataLoader:
    """Ready-made batches as one loader (a plain list would be read as several loaders)."""
    return DataLoader(list(items), batch_size=None)


def quiet_trainer(tmp_path: Path, **kwargs) -> L.Trainer:
    return L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path, **kwargs)


def one_hot(labels, k=K, value=5.0) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.as_tensor(labels), k).float() * value
