"""Losses: modules `(outputs: dict, labels) -> dict[str, Tensor]` with the total under
"loss" and every term under its own name (each is logged as train/loss_<name>).

One mechanism serves every paper's loss (`MultiTermLoss`):

* cross-entropy on named logits entries with weights — `{"logits": 1.0, "aux_logits": 0.5}`
  (TPN/TDPN's auxiliary head);
* the same CE on every entry of `outputs["branch_logits"]` (the sparse-attention model's
  per-branch terms; a branch the network did not return adds nothing);
* weighted regularisers the network computes itself, `outputs["regularizers"][name]`
  (ST-MANet's diversity terms).

Terms are logged unweighted (what each measures); the total uses the weights. An entry the
network does not return (aux head at eval, a switched-off module) is skipped.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn


def term_name(key: str) -> str:
    """Output key → logged term name: "logits" → "ce", "aux_logits" → "aux"."""
    return "ce" if key == "logits" else key.removesuffix("_logits")


class MultiTermLoss(nn.Module):
    """total = Σ_k w_k·CE(outputs[k]) + w_branch·Σ_b CE(outputs["branch_logits"][b])
    + Σ_r λ_r·outputs["regularizers"][r]."""

    def __init__(self, weights: Mapping[str, float] | None = None, branch_weight: float = 0.0,
                 regularizer_weights: Mapping[str, float] | None = None, label_smoothing: float = 0.0):
        super().__init__()
        self.weights = dict(weights) if weights is not None else {"logits": 1.0}
        self.branch_weight = float(branch_weight)
        self.regularizer_weights = dict(regularizer_weights or {})
        self.label_smoothing = label_smoothing

    def ce(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), labels, label_smoothing=self.label_smoothing)

    def forward(self, outputs: dict, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        terms: dict[str, torch.Tensor] = {}
        weighted: list[torch.Tensor] = []
        for key, weight in self.weights.items():
            if outputs.get(key) is None:
                continue
            value = self.ce(outputs[key], labels)
            terms[term_name(key)] = value
            weighted.append(weight * value)
        if self.branch_weight:
            for branch, logits in (outputs.get("branch_logits") or {}).items():
                value = self.ce(logits, labels)
                terms[f"ce_{branch}"] = value
                weighted.append(self.branch_weight * value)
        regularizers = outputs.get("regularizers") or {}
        for name, weight in self.regularizer_weights.items():
            if regularizers.get(name) is None:
                continue
            value = regularizers[name].float()
            terms[name] = value
            weighted.append(weight * value)
        if not weighted:
            raise KeyError(f"the loss found none of {sorted(self.weights)} in the network's outputs "
                           f"(it returned {sorted(outputs)})")
        return {"loss": torch.stack(weighted).sum(), **terms}


class CrossEntropy(MultiTermLoss):
    """Cross-entropy on `outputs["logits"]` (term "ce")."""

    def __init__(self, label_smoothing: float = 0.0):
        super().__init__(weights={"logits": 1.0}, label_smoothing=label_smoothing)
