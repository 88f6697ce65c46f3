"""Sparse-attention T-CNN (Zhou et al. 2022; spec C): one shared T-CNN sees the original clip V_o (branch
O), its discriminative zoom V_dis (D) and its complementary zoom V_com (C); a fusion FC classifies the
concatenated pooled features of the active branches.

Forward (spec C.2): ``g_o, X = TCNN(V_o)``; ``V_dis, V_com = SparseSpatialAttention(V_o, X, W, b)`` with
the O classifier's W, b; one T-CNN call on ``cat[V_dis, V_com]`` (only the active ones); per-branch logits
``FC(drop(g_b))``; ``F_total = FC_fuse(cat[drop(g_b)])`` in the order O, D, C. With O inactive (``CD``) the
O pass runs without gradient: it only supplies X [D15]. ``branches="O"`` is the plain T-CNN.

Outputs: ``{"logits": F_total, "branch_logits": {"original": F_o, "discriminative": F_dis,
"complementary": F_com}}`` (active branches, in eval too) — with ``MultiTermLoss(weights={logits: 1},
branch_weight=1)`` that is Eq. 8: Σ_b CE(F_b) + CE(F_total). O-only: ``{"logits": F_o}`` (one term).
``forward_with_attention`` also returns the zoomed clips and peaks (for ``tempo.analysis.visualize``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from tempo.models.blocks.sparse_attention import SparseSpatialAttention
from tempo.models.tcnn import TCNNBackbone, build_backbone, check_start_checkpoint
from tempo.models.weights import init_from_checkpoint

BRANCH_NAMES = {"O": "original", "D": "discriminative", "C": "complementary"}
BRANCH_SETS = ("O", "OD", "OC", "CD", "OCD")
HEAD_MODES = ("shared", "separate")


def check_branches(branches: str) -> str:
    """`model.network.branches` → the active branches in the order O, D, C (``"DC"`` == ``"CD"``)."""
    letters = str(branches).upper()
    ordered = "".join(b for b in "ODC" if b in letters)
    if set(letters) - set("ODC") or len(ordered) != len(letters) or "".join(sorted(ordered)) not in {
            "".join(sorted(s)) for s in BRANCH_SETS}:
        raise ValueError(f"model.network.branches must be one of {list(BRANCH_SETS)} (O original, D "
                         f"discriminative, C complementary; D or C alone is not a paper setting), got {branches!r}")
    return ordered


class TCNNSparse(nn.Module):
    """Three-branch sparse-attention T-CNN (spec C). See the module docstring; options:

    ``branches`` O | OD | OC | CD | OCD (Table 4); ``branch_heads`` [D14] ``shared`` (one FC for every
    branch, the default) or ``separate`` (``fc`` for O and the CRMs, ``branch_fc.discriminative`` /
    ``branch_fc.complementary`` for D and C, initialised as copies of ``fc``; with C+D, ``fc`` is frozen:
    only the CRMs read it); ``init_checkpoint`` [D16]: a T-CNN (or sparse model)
    checkpoint for the backbone and, with ``init_classifier`` (default), its classifier — the CRMs need a
    trained classifier: a model with a D or C branch and no checkpoint (or ``init_classifier=false``) fails
    unless ``allow_untrained_crm`` (tests, or a classifier loaded some other way)."""

    def __init__(self, num_classes: int, backbone: Callable[..., TCNNBackbone] | TCNNBackbone | None = None,
                 attention: SparseSpatialAttention | None = None, branches: str = "OCD",
                 branch_heads: str = "shared", dropout: float = 0.5, init_checkpoint: str | None = None,
                 init_classifier: bool = True, allow_untrained_crm: bool = False):
        super().__init__()
        if branch_heads not in HEAD_MODES:
            raise ValueError(f"model.network.branch_heads must be one of {HEAD_MODES}, got {branch_heads!r}")
        self.branches = check_branches(branches)
        make = "python -m tempo.train experiment=tcnn_ucf101 (or tcnn_hmdb51: the T-CNN on the same data)"
        if self.branches != "O" and not (init_checkpoint and init_classifier) and not allow_untrained_crm:
            raise ValueError(
                f"model.network.branches={self.branches} reads class response maps from the classifier, which "
                f"no checkpoint trains here (init_checkpoint={init_checkpoint}, init_classifier={init_classifier}):"
                f" the attention would follow a random classifier. Make a T-CNN checkpoint on this dataset with "
                f"`{make}` and pass model.network.init_checkpoint=<its checkpoints/last.ckpt>, or set "
                "model.network.allow_untrained_crm=true to train anyway")
        check_start_checkpoint(init_checkpoint, make)
        self.branch_heads = branch_heads
        self.backbone = build_backbone(backbone)
        channels = self.backbone.out_channels
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(channels, num_classes)
        nn.init.normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)
        zoomed = [BRANCH_NAMES[b] for b in self.branches if b != "O"]
        self.branch_fc = nn.ModuleDict({name: nn.Linear(channels, num_classes) for name in zoomed}
                                       if branch_heads == "separate" else {})
        for head in self.branch_fc.values():
            head.load_state_dict(self.fc.state_dict())
        if branch_heads == "separate" and "O" not in self.branches:
            # C+D with own heads: fc only supplies the CRMs (no loss reaches it); it stays as initialised
            self.fc.requires_grad_(False)
        self.attention = (attention or SparseSpatialAttention()) if zoomed else None
        if self.attention is not None:  # the width of an inactive set is never used: keep it out of training
            self.attention.saliency.beta1.requires_grad_("D" in self.branches)
            self.attention.saliency.beta2.requires_grad_("C" in self.branches)
        self.fc_fuse = nn.Linear(channels * len(self.branches), num_classes) if len(self.branches) > 1 else None
        if init_checkpoint:
            self.init_from(init_checkpoint, init_classifier)

    def init_from(self, path: str, init_classifier: bool) -> None:
        """[D16] backbone (+ ``fc``) from a T-CNN checkpoint; separate D/C heads start as a copy of ``fc``."""
        skip = ("attention.", "fc_fuse.", "branch_fc.") + (() if init_classifier else ("fc.",))
        init_from_checkpoint(self, path, skip=skip, hint="a model=tcnn checkpoint with the same backbone widths; "
                             "model.network.init_classifier=false if its classes differ")
        for head in self.branch_fc.values():
            head.load_state_dict(self.fc.state_dict())

    def head(self, name: str) -> nn.Linear:
        return self.branch_fc[name] if name in self.branch_fc else self.fc

    def pooled(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        maps = self.backbone(video)
        return maps.mean(dim=(2, 3, 4)), maps

    def forward_with_attention(self, video: torch.Tensor) -> tuple[dict, dict | None]:
        """(outputs, attention) — attention is the sparse-attention block's dict (zoomed clips, peaks)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and "O" in self.branches):
            pooled_o, features = self.pooled(video)
        pooled = {"original": pooled_o} if "O" in self.branches else {}
        attention = None
        if self.attention is not None:
            zoomed = tuple(BRANCH_NAMES[b] for b in self.branches if b != "O")
            attention = self.attention(video, features, self.fc.weight, self.fc.bias, outputs=zoomed)
            clips = torch.cat([attention[name] for name in zoomed])
            for name, feats in zip(zoomed, self.pooled(clips)[0].unflatten(0, (len(zoomed), -1)), strict=True):
                pooled[name] = feats
        dropped = {name: self.dropout(feats) for name, feats in pooled.items()}
        branch_logits = {name: self.head(name)(feats) for name, feats in dropped.items()}
        if self.fc_fuse is None:
            return {"logits": branch_logits["original"]}, attention
        fused = self.fc_fuse(torch.cat(list(dropped.values()), dim=1))
        return {"logits": fused, "branch_logits": branch_logits}, attention

    def forward(self, video: torch.Tensor) -> dict:
        return self.forward_with_attention(video)[0]

    def no_weight_decay(self) -> set[str]:
        """Parameter names to keep out of weight decay [D10]: the Gaussian widths β1, β2 in training."""
        if self.attention is None:
            return set()
        return {f"attention.saliency.{n}" for n, p in self.attention.saliency.named_parameters() if p.requires_grad}

    def extra_repr(self) -> str:
        return f"branches={self.branches}, branch_heads={self.branch_heads}"
