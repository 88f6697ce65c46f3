"""Released state dicts → tempo network state dicts: layout detection, key renaming, the completeness check."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from types import ModuleType

import torch

from tempo.models.zoo import mmaction2, tcm_official, tsm_official
from tempo.models.zoo.reading import CheckpointError
from tempo.models.zoo.rules import rename_all

#: The source layouts, most specific first (a TCM file is also TSM-shaped).
LAYOUTS: tuple[ModuleType, ...] = (mmaction2, tcm_official, tsm_official)
LAYOUT_NAMES = {m.NAME: m for m in LAYOUTS}
#: BatchNorm's step counter: files saved before PyTorch 0.4.1 lack it; PyTorch fills it in.
BN_COUNTER = "num_batches_tracked"


def detect_layout(keys: Collection[str], path: str, expected: str | None = None) -> ModuleType:
    """The layout module whose keys these are; with `expected` (a zoo entry's), a file of another layout is an
    error naming both."""
    found = next((m for m in LAYOUTS if m.matches(keys)), None)
    if expected is not None and expected not in LAYOUT_NAMES:
        raise CheckpointError(f"zoo layout {expected!r} unknown; known layouts: {sorted(LAYOUT_NAMES)}")
    if found is None:
        raise CheckpointError(f"{path}: keys {sorted(keys)[:4]}… match none of the known layouts "
                              f"{sorted(LAYOUT_NAMES)} (MMAction2 1.x backbone./cls_head., official TSM/TCM "
                              "module.base_model./module.new_fc); is it a released action-recognition checkpoint?")
    if expected is not None and found.NAME != expected:
        raise CheckpointError(f"{path} is a {found.NAME} checkpoint but the zoo entry expects {expected}; "
                              "pick the zoo entry of that release (conf/zoo/)")
    return found


def classifier_size(state: Mapping[str, torch.Tensor], layout: ModuleType, path: str) -> int:
    """The number of classes: the first dimension of the source classifier's weight."""
    key = layout.classifier_key(state.keys())
    if key not in state:
        raise CheckpointError(f"{path}: no classifier weight {key!r}; a {layout.NAME} checkpoint has one")
    return int(state[key].shape[0])


def to_tempo(state: Mapping[str, torch.Tensor], layout: ModuleType, path: str) -> dict[str, torch.Tensor]:
    """`state` under tempo's names (shapes adapted where the layouts differ); a key no rule maps is an error."""
    renamed, unmapped = rename_all(state, layout.RULES)
    if unmapped:
        raise CheckpointError(f"{path}: {len(unmapped)} tensors of the {layout.NAME} layout map to nothing in "
                              f"tempo: {unmapped[:6]}")
    adapt = getattr(layout, "adapt", None)
    return {k: adapt(k, v) if adapt else v for k, v in renamed.items()}


def fit_report(own: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]) -> dict[str, list[str]]:
    """{"missing", "unexpected", "mismatched"} keys of `state` against `own` (BN counters may be missing)."""
    return {
        "missing": sorted(k for k in own.keys() - state.keys() if not k.endswith(BN_COUNTER)),
        "unexpected": sorted(state.keys() - own.keys()),
        "mismatched": sorted(f"{k} {tuple(state[k].shape)} vs tempo {tuple(own[k].shape)}"
                             for k in own.keys() & state.keys() if own[k].shape != state[k].shape),
    }


def with_bn_counters(own: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state` plus the network's own `num_batches_tracked` where the file has none."""
    return {**{k: v for k, v in own.items() if k.endswith(BN_COUNTER) and k not in state}, **state}


def load_converted(network: torch.nn.Module, state: Mapping[str, torch.Tensor], path: str, layout: str) -> None:
    """Load `state` (tempo names) into `network`, every tensor accounted for both ways."""
    own = network.state_dict()
    report = fit_report(own, state)
    problems = [f"{len(v)} {k} {v[:5]}" for k, v in report.items() if v]
    if problems:
        raise CheckpointError(f"{path} ({layout}) does not fit the configured tempo network "
                              f"{type(network).__name__}: " + "; ".join(problems)
                              + ". Pick the zoo entry of this release (zoo=…) or the matching model/backbone/"
                              "dataset.num_segments options")
    network.load_state_dict(with_bn_counters(own, state))
