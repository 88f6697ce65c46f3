"""Released checkpoints of other codebases → tempo checkpoints (`python -m tempo.convert`).

The file is read safely (`tempo.models.zoo.reading`), its layout detected (or checked against the zoo entry's),
its keys renamed (`tempo.models.zoo.<layout>`), the class count taken from its classifier, and the network of the
composed config (the zoo entry's options, or the command line's) loaded with every tensor accounted for. The
output is what a training run saves: ``{"state_dict": <RecognitionModule state>, "tempo": run_info}`` plus
``"zoo"`` (the entry's metadata), so `tempo.evaluate` / `tempo.demo` rebuild the network from it alone.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from tempo.models.zoo.classes import CLASS_LISTS
from tempo.models.zoo.convert import classifier_size, detect_layout, load_converted, to_tempo
from tempo.models.zoo.reading import read_tensors
from tempo.run.build import build_module
from tempo.run.checkpoint import run_info
from tempo.run.config import ConfigError

log = logging.getLogger(__name__)


def class_names(zoo: DictConfig | None, num_classes: int) -> list[str] | None:
    """The entry's class list (`zoo.classes`, e.g. kinetics400) when it has that many names; else None
    (evaluation then takes the dataset's names, the demo prints indices)."""
    name = (zoo or {}).get("classes")
    if not name:
        return None
    if name not in CLASS_LISTS:
        raise ConfigError(f"zoo.classes={name!r} unknown; known lists: {sorted(CLASS_LISTS)} or null")
    names = list(CLASS_LISTS[name])
    if len(names) != num_classes:
        raise ConfigError(f"zoo.classes={name} has {len(names)} names but the checkpoint's classifier has "
                          f"{num_classes} classes: is this the release the zoo entry describes?")
    return names


def convert(cfg: DictConfig) -> Path:
    """Write the tempo checkpoint of `cfg.checkpoint` and return its path."""
    if not cfg.get("checkpoint"):
        raise ConfigError("checkpoint is required: python -m tempo.convert checkpoint=<released .pth> zoo=<entry> "
                          "(entries: conf/zoo/)")
    path = str(cfg.checkpoint)
    zoo = cfg.get("zoo")
    state = read_tensors(path, "checkpoint")
    layout = detect_layout(state.keys(), path, zoo.layout if zoo else None)
    num_classes = classifier_size(state, layout, path)
    converted = to_tempo(state, layout, path)
    config = cfg.copy()
    with open_dict(config):
        config.dataset.num_classes = num_classes
        config.checkpoint = None  # the output does not depend on the input's location
        config.out = None
    names = class_names(zoo, num_classes)
    module = build_module(config)
    load_converted(module.network, converted, path, layout.NAME)
    out = Path(cfg.out) if cfg.get("out") else Path(cfg.paths.output_dir) / f"{Path(path).stem}.ckpt"
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = OmegaConf.to_container(zoo, resolve=True) if zoo else {"layout": layout.NAME}
    torch.save({"state_dict": module.state_dict(), "tempo": run_info(config, names),
                "zoo": {**meta, "converted_from": path}}, out)
    print(f"{path} ({layout.NAME}, {len(state)} tensors, {num_classes} classes) → {out}")
    print(f"evaluate: python -m tempo.evaluate ckpt_path={out} dataset.root=… ;  "
          f"demo: python -m tempo.demo ckpt_path={out} video=<file>")
    return out
