"""The official TSM releases (mit-han-lab/temporal-shift-module): a DataParallel ``module.base_model.*``
torchvision ResNet whose blocks' conv1 sits in the shift wrapper (``conv1.net``), classifier ``module.new_fc``
(Linear) → tempo's TSM names."""

from __future__ import annotations

from collections.abc import Collection

NAME = "tsm_official"

RULES = [
    (r"^module\.base_model\.(layer\d+\.\d+\.conv1)\.net\.", r"backbone.\1."),
    (r"^module\.base_model\.fc\.", "fc."),  # dropout 0: the classifier replaces base_model.fc
    (r"^module\.base_model\.(?!fc\.)", "backbone."),
    (r"^module\.new_fc\.", "fc."),
]


def matches(keys: Collection[str]) -> bool:
    return any(k.startswith("module.base_model.layer") for k in keys) and not any(".tcm_layer." in k for k in keys)


def classifier_key(keys: Collection[str]) -> str:
    return "module.new_fc.weight" if "module.new_fc.weight" in keys else "module.base_model.fc.weight"
