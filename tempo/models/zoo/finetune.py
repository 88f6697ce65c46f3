"""Fine-tuning from a released file: its backbone (and any other module it shares with the network)
initialises the network; the classifier and the modules the release lacks start fresh, reported by module."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from types import ModuleType

import torch
from torch import nn

from tempo.models.zoo.convert import BN_COUNTER, to_tempo, with_bn_counters
from tempo.models.zoo.reading import CheckpointError

log = logging.getLogger(__name__)
#: Modules tempo inserts into a backbone (TCM blocks, TDPN's after-conv1 slots): a release may lack them.
INSERTED = ("after_stage.", "after_conv1.")


def replaced_backbone_prefixes(model: nn.Module) -> tuple[str, ...]:
    """Key prefixes of backbone modules the network replaced by its own (e.g. TDPN's res5 MHSA and its fresh
    BN): a release's tensors there do not apply, and the network's start fresh. A network says which through
    the optional hook ``replaced_backbone_prefixes()``."""
    hook = getattr(model, "replaced_backbone_prefixes", None)
    return tuple(hook()) if hook is not None else ()


def module_of(key: str) -> str:
    """The module a tensor belongs to, for the report: ``backbone`` for the trunk, else up to two levels
    (``backbone.after_stage.2``, ``pyramid.spatial_modulation``, ``fc``)."""
    parts = key.split(".")[:-1]
    if parts[:1] == ["backbone"]:
        for marker in INSERTED:
            name = marker.rstrip(".")
            if name in parts:
                return ".".join(parts[: parts.index(name) + (2 if name == "after_stage" else 1)])
        return "backbone"
    return ".".join(parts[:2])


def _count_by_module(keys) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for key in keys:
        if not key.endswith(BN_COUNTER):
            counts[module_of(key)] += 1
    return dict(sorted(counts.items()))


def init_from_released(model: nn.Module, state: Mapping[str, torch.Tensor], layout: ModuleType, path: str,
                       skip: Sequence[str] = ("fc.",)) -> dict[str, dict[str, int]]:
    """Initialise `model` from a released state dict of `layout` (see `init_backbone`)."""
    return init_backbone(model, to_tempo(state, layout, path), layout.NAME, path, skip)


def init_backbone(model: nn.Module, state: Mapping[str, torch.Tensor], source: str, path: str,
                  skip: Sequence[str] = ("fc.",)) -> dict[str, dict[str, int]]:
    """Initialise `model` from a state dict under tempo's names (a release after renaming, or a converted
    checkpoint's network): every backbone tensor must come from it (same shape); modules it lacks (inserted
    blocks, pyramids, heads) and the `skip` prefixes start fresh. Returns {"initialised", "fresh", "unused"}:
    tensor counts by module."""
    replaced = replaced_backbone_prefixes(model)
    converted = {k: v for k, v in state.items() if not k.startswith((*skip, *replaced))}
    own = model.state_dict()
    mismatched = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in converted.items()
                  if k in own and own[k].shape != v.shape]
    trunk = [k for k in own if k.startswith("backbone.") and not any(m in k for m in INSERTED)
             and not k.startswith(replaced)]
    missing = [k for k in trunk if k not in converted and not k.endswith(BN_COUNTER)]
    if mismatched or missing:
        raise CheckpointError(
            f"model.network.init_checkpoint={path} ({source}) does not fit this network's backbone: "
            + "; ".join(f"{len(v)} {name} {v[:4]}" for name, v in (("shape mismatches", mismatched),
                                                                     ("backbone tensors missing", missing)) if v)
            + ". Use the backbone the release was trained with (see its conf/zoo entry)")
    used = {k: v for k, v in converted.items() if k in own}
    model.load_state_dict(with_bn_counters({k: own[k] for k in own if k.startswith("backbone.")}, used),
                          strict=False)
    report = {"initialised": _count_by_module(used), "fresh": _count_by_module(own.keys() - used.keys()),
              "unused": _count_by_module((converted.keys() - own.keys())
                                         | {k for k in state if k.startswith(replaced)})}
    log.info("init_checkpoint %s (%s): initialised %s; starting fresh %s%s", path, source,
             _describe(report["initialised"]), _describe(report["fresh"]),
             f"; not used {_describe(report['unused'])}" if report["unused"] else "")
    return report


def _describe(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{name} ({n} tensors)" for name, n in counts.items()) or "nothing"
