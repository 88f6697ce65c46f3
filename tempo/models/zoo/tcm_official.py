"""The official TCM release (zphyix/TCM, e.g. ``sthv1_8f_best.pth``): TSM's DataParallel
``module.base_model.*`` ResNet (the shift is in the block's forward, no wrapper), one TCM after res3 as
``tcm_layer`` (``mtdm.chnl_reduction``; ``tam.conv1..conv4`` Sequentials of conv, BN, ReLU; ``tam.ETA``) and the
classifier ``module.new_fc`` as a Conv1d (K, C, 1) → tempo's TCM names (``backbone.after_stage.2.*``, ``fc``)."""

from __future__ import annotations

from collections.abc import Collection

import torch

NAME = "tcm_official"
TCM = r"^module\.base_model\.tcm_layer\."
BLOCK = "backbone.after_stage.2."  # res3 = stage 2 (tempo's positions: [3])


def _sequential(source: str, target: str, units: int) -> list[tuple[str, str]]:
    """Official Sequential(conv, BN, ReLU, conv, BN, ReLU, …) indices 3i / 3i+1 → tempo's i.0 / i.1."""
    rules = []
    for i in range(units):
        rules += [(f"{TCM}{source}\\.{3 * i}\\.", f"{BLOCK}{target}.{i}.0."),
                  (f"{TCM}{source}\\.{3 * i + 1}\\.", f"{BLOCK}{target}.{i}.1.")]
    return rules


RULES = [
    (f"{TCM}mtdm\\.chnl_reduction\\.0\\.", f"{BLOCK}mtdm.reduce.0."),
    (f"{TCM}mtdm\\.chnl_reduction\\.1\\.", f"{BLOCK}mtdm.reduce.1."),
    *_sequential("tam\\.conv1", "tam.stage1", 4),
    *_sequential("tam\\.conv2", "tam.stage2", 2),
    *_sequential("tam\\.conv3", "tam.stage3", 2),
    *_sequential("tam\\.conv4", "tam.stage4", 2),
    (f"{TCM}tam\\.ETA\\.conv\\.", f"{BLOCK}tam.eca.conv."),
    (r"^module\.base_model\.(?!tcm_layer\.|fc1?\.)", "backbone."),
    (r"^module\.new_fc\.", "fc."),
]


def matches(keys: Collection[str]) -> bool:
    return any(k.startswith("module.base_model.tcm_layer.") for k in keys)


def classifier_key(keys: Collection[str]) -> str:
    return "module.new_fc.weight"


def adapt(key: str, value: torch.Tensor) -> torch.Tensor:
    """The Conv1d classifier's (K, C, 1) kernel is tempo's Linear (K, C) weight."""
    return value.squeeze(-1) if key == "fc.weight" and value.dim() == 3 else value
