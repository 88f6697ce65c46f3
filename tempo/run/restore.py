"""Rebuilding trained modules from checkpoints: one checkpoint, or an ensemble of several, with the
training config each carries (`tempo.run.checkpoint`) and the command line's overrides on top."""

from __future__ import annotations

import logging

import torch
from omegaconf import DictConfig, ListConfig, open_dict
from torch import nn

from tempo.analysis.ensemble import Ensemble
from tempo.models.weights import state_dict_mismatch
from tempo.run.build import build_module
from tempo.run.checkpoint import checkpoint_config, read_checkpoint, read_run_info
from tempo.run.config import ConfigError
from tempo.run.module import RecognitionModule

log = logging.getLogger(__name__)


def load_weights(module: RecognitionModule, cfg: DictConfig, path: str) -> RecognitionModule:
    """`module` with the weights of checkpoint `path` (every key must match)."""
    state = read_checkpoint(path)
    state = state.get("state_dict", state)
    problem = state_dict_mismatch(module.state_dict(), state, unexpected_ok=False)
    if problem:
        raise ConfigError(f"ckpt_path={path} does not fit the configured network "
                          f"({cfg.model.network._target_}): {problem}. "
                          "Pass the training run's model/backbone/dataset options (or its experiment=...).")
    module.load_state_dict(state)
    return module.eval()


def load_module(cfg: DictConfig) -> RecognitionModule:
    """The `RecognitionModule` of `cfg` with the weights of `cfg.ckpt_path`."""
    return load_weights(build_module(cfg), cfg, str(cfg.ckpt_path))


def ckpt_paths(cfg: DictConfig) -> list[str]:
    value = cfg.get("ckpt_path")
    paths = [str(p) for p in value] if isinstance(value, ListConfig | list | tuple) else [str(value)] if value else []
    if not paths:
        raise ConfigError("ckpt_path is required: pass a checkpoint such as "
                          "ckpt_path=outputs/<date>/<time>/checkpoints/last.ckpt (or a list [a.ckpt,b.ckpt] "
                          "to evaluate an ensemble)")
    return paths


def run_config(cfg: DictConfig, path: str, overrides: list[str]) -> tuple[DictConfig, list[str] | None]:
    """(config, class names) of checkpoint `path`: its training run's, with the command-line overrides."""
    info = read_run_info(path)
    if info is None:
        log.warning("%s stores no training config (saved by an older tempo): the network is built from the "
                    "command line's model/backbone/dataset options", path)
        return cfg, None
    config = checkpoint_config(info, cfg, overrides)
    with open_dict(config):
        config.ckpt_path = path
    return config, info.get("class_names")


def load_evaluated(cfg: DictConfig, overrides: list[str]) -> tuple[DictConfig, list[str] | None, RecognitionModule]:
    """(config, class names, module) of one checkpoint or of an ensemble (`ckpt_path=[a,b]`): members must share
    the classes; the clip has the largest member's frame count (see `tempo.analysis.ensemble`); an ensemble's
    config lists its members in `ensemble` (checkpoint, model, frames, weight)."""
    paths = ckpt_paths(cfg)
    runs = [run_config(cfg, path, overrides) for path in paths]
    modules = [load_weights(build_module(config), config, path) for (config, _), path in zip(runs, paths, strict=True)]
    config, names = runs[0]
    if len(paths) == 1:
        return config, names, modules[0]
    for (other, other_names), path in zip(runs[1:], paths[1:], strict=True):
        if int(other.dataset.num_classes) != int(config.dataset.num_classes) or (names and other_names != names):
            raise ConfigError(f"ensemble members must share their classes: {paths[0]} has "
                              f"{config.dataset.num_classes} ({(names or [])[:3]}…), {path} has "
                              f"{other.dataset.num_classes} ({(other_names or [])[:3]}…)")
    frames = [int(c.dataset.num_segments) for c, _ in runs]
    config = runs[frames.index(max(frames))][0]  # the clip of the longest member; the others subsample it
    with open_dict(config):
        config.ckpt_path = paths
        # every member, as eval.json and the console list them (the scores are averaged: equal weights)
        config.ensemble = [{"checkpoint": path, "model": c.model.network._target_, "frames": t,
                            "weight": 1 / len(paths)} for (c, _), path, t in zip(runs, paths, frames, strict=True)]
    network = Ensemble([m.network for m in modules], frames, str(config.dataset.test_reduce))
    return config, names, build_module(config, network=network).eval()


class ReindexedClasses(nn.Module):
    """A network whose class scores are put in another class order: output j is the wrapped network's
    output `index[j]` (for every output with one score per class: logits, auxiliary logits)."""

    def __init__(self, network: nn.Module, index: list[int]):
        super().__init__()
        self.network = network
        self.register_buffer("index", torch.tensor(index, dtype=torch.long), persistent=False)

    def forward(self, video: torch.Tensor) -> dict[str, torch.Tensor]:
        outputs = self.network(video)
        k = len(self.index)
        return {name: value.index_select(-1, self.index) if value.dim() >= 1 and value.shape[-1] == k else value
                for name, value in outputs.items()}


def match_classes(module: RecognitionModule, saved: list[str] | None, data: list[str] | None,
                  dataset: str) -> list[str] | None:
    """Make `module` score the dataset's classes in the dataset's order: the checkpoint's class names `saved`
    (e.g. a converted Kinetics release, in the release's order) and the dataset's `data` must be the same
    names; another order re-indexes the network's outputs, other names are an error listing the first
    differences. Returns the class names the scores now follow."""
    if not saved or not data or list(saved) == list(data):
        return list(saved or data or []) or None
    if sorted(saved) != sorted(data):
        only_ckpt = sorted(set(saved) - set(data))
        only_data = sorted(set(data) - set(saved))
        raise ConfigError(f"the classes of dataset {dataset} are not the checkpoint's: {len(only_data)} only in "
                          f"the dataset {only_data[:5]}, {len(only_ckpt)} only in the checkpoint {only_ckpt[:5]} "
                          f"({len(data)} vs {len(saved)} classes). Evaluate on the dataset the checkpoint was "
                          "trained for, or fine-tune it (model.network.init_checkpoint=...)")
    position = {name: i for i, name in enumerate(saved)}
    module.network = ReindexedClasses(module.network, [position[name] for name in data])
    log.info("dataset %s lists the checkpoint's %d classes in another order: scores re-indexed to the dataset's",
             dataset, len(data))
    return list(data)
