"""Params and GMACs of a network at its configured clip size (tempo.profile's counters), for run summaries."""

from __future__ import annotations

import copy

import torch
from omegaconf import DictConfig
from torch import nn

from tempo.profile import count_macs, make_clip, num_params


def network_complexity(network: nn.Module, cfg: DictConfig) -> dict:
    """{"params": parameters, "gmacs": GMACs of one eval forward pass on one clip} (on a CPU copy: the
    network's own state, e.g. BatchNorm statistics, is untouched)."""
    model = copy.deepcopy(network).cpu().float()
    with torch.random.fork_rng():  # the run's random stream stays as seeded
        macs = count_macs(model, make_clip(cfg, 1, torch.device("cpu")))
    return {"params": num_params(network), "gmacs": round(macs["total_macs"] / 1e9, 4)}
