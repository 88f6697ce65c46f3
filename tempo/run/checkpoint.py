"""Checkpoints that know themselves: the training config and class names travel in every checkpoint.

`RunInfo` (a callback `tempo.train` adds) writes `checkpoint["tempo"] = {"config": <resolved config>,
"config_unresolved": <config with its interpolations>, "class_names": [...]}` as plain containers, so
`torch.load(..., weights_only=True)` reads it. `checkpoint_config` rebuilds the run's config from it
and applies command-line overrides on top: keys (`dataset.root=…`, interpolations follow) and option
groups (`test_views=10x3`); the network is always the checkpoint's, and an override that contradicts
it (model class, backbone, num_segments, input size, num_classes) is an error naming both values.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import torch
import yaml
from omegaconf import DictConfig, OmegaConf, open_dict

from tempo import CONF_DIR
from tempo.run.callbacks import skip_unused_batch_hooks
from tempo.run.config import ConfigError

log = logging.getLogger(__name__)
CONF_PATH = Path(CONF_DIR)

# the network is rebuilt from the checkpoint; these must not change under it
NETWORK_KEYS = ("model.network._target_", "backbone._target_", "backbone.depth", "dataset.num_segments",
                "dataset.input_size", "dataset.num_classes")
# keys of the evaluation command itself, never taken from the training run
OWN_KEYS = ("ckpt_path", "eval", "paths.output_dir", "video", "top_k", "device", "gradcam", "gradcam_frames",
            "views")


def run_info(cfg: DictConfig, class_names: list[str] | None) -> dict:
    """What a checkpoint stores about its run (plain containers: weights_only-loadable)."""
    return {"config": OmegaConf.to_container(cfg, resolve=True),
            "config_unresolved": OmegaConf.to_container(cfg, resolve=False),
            "class_names": [str(c) for c in class_names] if class_names else None}


@skip_unused_batch_hooks
class RunInfo(L.Callback):
    """Stores `run_info(cfg, datamodule.class_names)` in every checkpoint the trainer saves."""

    def __init__(self, cfg: DictConfig):
        self.cfg = cfg

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        datamodule = getattr(trainer, "datamodule", None)
        checkpoint["tempo"] = run_info(self.cfg, getattr(datamodule, "class_names", None))


def read_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"ckpt_path={path}: no such checkpoint file")
    return torch.load(path, map_location="cpu", weights_only=True)


def read_run_info(path: str | Path) -> dict | None:
    """The checkpoint's `run_info` (None for checkpoints saved before it existed)."""
    return read_checkpoint(path).get("tempo")


def _select(cfg: DictConfig, key: str):
    return OmegaConf.select(cfg, key, default=None, throw_on_missing=False)


def parse_overrides(overrides: list[str]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(key overrides, group overrides) as (name, value) pairs; a name is a group when conf/<name>/ exists."""
    keys, groups = [], []
    for text in overrides:
        name, _, value = text.partition("=")
        name = name.lstrip("+~")
        if name.startswith("hydra"):
            continue
        (groups if (CONF_PATH / name.split("@")[0]).is_dir() else keys).append((name, value))
    return keys, groups


def _option(group: str, option: str) -> tuple[str, dict]:
    """(package, content) of conf/<group>/<option>.yaml; package '' is the root."""
    path = CONF_PATH / group / f"{option}.yaml"
    if not path.is_file():
        choices = sorted(p.stem for p in (CONF_PATH / group).glob("*.yaml"))
        raise ConfigError(f"{group}={option}: no file {path}; choose one of {choices}")
    text = path.read_text()
    package = group.replace("/", ".")
    for line in text.splitlines():
        if line.startswith("# @package"):
            package = line.split()[-1]
    package = "" if package == "_global_" else package
    return package, yaml.safe_load(text) or {}


def _merge_group(config: DictConfig, user_cfg: DictConfig, group: str, option: str) -> None:
    """Apply `group[@package]=option` to the checkpoint's config. Network groups must name the checkpoint's
    network (compared in `check_network`: the network is the checkpoint's)."""
    group, _, package_override = group.partition("@")
    if group in ("model", "backbone"):
        return
    package, content = _option(group, option)
    package = package_override or package
    if "defaults" in content or group == "dataset":
        # an option with its own defaults list: Hydra composed it on the command line already
        node = package or group
        OmegaConf.update(config, node, _select(user_cfg, node), merge=False)
        return
    if package:
        OmegaConf.update(config, package, content, merge=True)
    else:
        config.merge_with(content)


def _leaves(tree, prefix: str = "") -> dict:
    if not isinstance(tree, dict):
        return {prefix.rstrip("."): tree}
    out = {}
    for key, value in tree.items():
        out.update(_leaves(value, f"{prefix}{key}."))
    return out


def check_network(saved: DictConfig, final: DictConfig, user_cfg: DictConfig, groups: list[tuple[str, str]],
                  ckpt_path: str) -> None:
    """Raise when the command line asks for another network than the checkpoint holds."""
    wanted = {}
    for name, _ in groups:
        group, _, package = name.partition("@")
        if group in ("model", "backbone"):
            node = package or group
            target = f"{node}.network._target_" if group == "model" else f"{node}._target_"
            wanted[target] = _select(user_cfg, target)
            if group == "backbone":  # every architecture key (weights to start from do not matter here)
                asked = _leaves(OmegaConf.to_container(_select(user_cfg, node), resolve=True))
                trained = _leaves(OmegaConf.to_container(_select(saved, node), resolve=True))
                for key in sorted(set(asked) | set(trained)):
                    if key.split(".")[0] != "pretrained":
                        wanted[f"{node}.{key}"] = asked.get(key, "(unset)")
    for key in NETWORK_KEYS:
        wanted.setdefault(key, _select(final, key))
    for key, value in wanted.items():
        have = _select(saved, key)
        have, value = ("(unset)" if v is None else v for v in (have, value))
        if str(value) != str(have):
            raise ConfigError(f"{key}: the checkpoint {ckpt_path} was trained with {key}={have} but the command "
                              f"line asks for {key}={value}. Drop that override (the network is rebuilt from "
                              "the checkpoint) or evaluate a checkpoint of that network.")


def checkpoint_config(info: dict, user_cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """The training run's config with `overrides` applied; its network is the checkpoint's exactly."""
    saved = OmegaConf.create(info["config"])
    config = OmegaConf.create(info.get("config_unresolved") or info["config"])
    with open_dict(config):
        config.paths = saved.paths  # resolved: cache folders as the run had them
        for key in OWN_KEYS:
            value = _select(user_cfg, key)
            if value is not None:
                OmegaConf.update(config, key, value, merge=False, force_add=True)
        keys, groups = parse_overrides(overrides)
        for group, option in groups:
            _merge_group(config, user_cfg, group, option)
        for key, _ in keys:
            if key.split(".")[0] not in OWN_KEYS:
                OmegaConf.update(config, key, _select(user_cfg, key), merge=False, force_add=True)
    check_network(saved, config, user_cfg, groups, str(user_cfg.get("ckpt_path")))
    with open_dict(config):
        # the network exactly as trained (its config embeds the backbone, resolved)
        config.model = saved.model
        config.backbone = saved.backbone
    return config


def task_overrides() -> list[str]:
    """The command line's overrides when running under Hydra, else []."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
