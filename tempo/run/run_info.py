"""What a run tells about itself: at start-up the config tree on the console, and the resolved
config plus the parameter count to every experiment logger (CSV hparams.yaml, TensorBoard, W&B);
at the end its best validation score as TensorBoard's `hp_metric`."""

from __future__ import annotations

from collections.abc import Iterable

from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.syntax import Syntax
from rich.tree import Tree
from torch import nn

# groups shown first, in this order; the remaining top-level keys follow
ORDER = ("model", "backbone", "dataset", "optimizer", "schedule", "trainer", "module", "logger", "callbacks")


def config_tree(cfg: DictConfig) -> Tree:
    tree = Tree("config", guide_style="dim")
    keys = [k for k in ORDER if k in cfg] + [k for k in cfg if k not in ORDER]
    for key in keys:
        value = cfg[key]
        if isinstance(value, DictConfig):
            text = OmegaConf.to_yaml(value, resolve=False)
        else:
            text = f"{value}"
        tree.add(f"[bold]{key}[/bold]").add(Syntax(text.rstrip(), "yaml", theme="ansi_dark"))
    return tree


def print_config(cfg: DictConfig, console: Console | None = None) -> None:
    """A compact tree of the composed config (interpolations shown as written)."""
    (console or Console()).print(config_tree(cfg))


def hyperparameters(cfg: DictConfig, network: nn.Module) -> dict:
    """The resolved config and the network's parameter counts, as loggers take them."""
    params = {"total": sum(p.numel() for p in network.parameters()),
              "trainable": sum(p.numel() for p in network.parameters() if p.requires_grad)}
    config = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    return {**config, "params": params}


def log_hyperparameters(loggers: Iterable, cfg: DictConfig, network: nn.Module) -> dict:
    hparams = hyperparameters(cfg, network)
    for logger in loggers:
        logger.log_hyperparams(hparams)
    return hparams


def log_best_metric(loggers: Iterable, value: float | None, step: int) -> None:
    """TensorBoard's HPARAMS tab compares runs by `hp_metric`, which Lightning sets to -1 when the
    hyper-parameters are logged: give it the run's best validation score (`optimized_metric`)."""
    from lightning.pytorch.loggers import TensorBoardLogger

    if value is None:
        return
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.log_metrics({"hp_metric": float(value)}, step=step)
