"""Params and GMACs of a network at its configured clip size (tempo.analysis.counting), for run summaries."""

from __future__ import annotations

import copy

import torch
from omegaconf import DictConfig
from torch import nn

from tempo.analysis.counting import count_macs, make_clip, num_params


def network_complexity(network: nn.Module, cfg: DictConfig) -> dict:
    """{"params": parameters, "gmacs": GMACs of one eval forward pass on one clip}, counted on a copy on
    the meta device (no arithmetic, so a 3D R50 at 32×224² costs nothing at start-up); networks whose
    forward needs real values (data-dependent control flow) are counted on a CPU copy instead. The
    network's own state (e.g. BatchNorm statistics) and the run's random stream are untouched."""
    macs = None
    with torch.random.fork_rng():
        for device in ("meta", "cpu"):
            try:
                model = copy.deepcopy(network).to(device).float()
                macs = count_macs(model, make_clip(cfg, 1, torch.device(device)))
                break
            except Exception:  # noqa: BLE001 - meta tensors have no values; the CPU copy does
                if device == "cpu":
                    raise
    return {"params": num_params(network), "gmacs": round(macs["total_macs"] / 1e9, 4)}
