"""Reading weight files safely (`weights_only=True`) and loading them only where they fit."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from tempo.models.zoo.convert import BN_COUNTER, detect_layout, with_bn_counters
from tempo.models.zoo.finetune import init_backbone, init_from_released
from tempo.models.zoo.reading import CheckpointError, load_any, tensors_of

log = logging.getLogger(__name__)


# torchvision's ImageNet releases of the ResNets (torchvision.models.ResNet*_Weights.IMAGENET1K_V1)
IMAGENET_URLS = {
    18: "https://download.pytorch.org/models/resnet18-f37072fd.pth",
    34: "https://download.pytorch.org/models/resnet34-b627a593.pth",
    50: "https://download.pytorch.org/models/resnet50-0676ba61.pth",
    101: "https://download.pytorch.org/models/resnet101-63fe2227.pth",
}

def read_state_dict(path: str | Path, what: str, prefix: str | None = None) -> dict[str, torch.Tensor]:
    """Tensors stored in `path` (a state dict or a `.ckpt` with "state_dict"), DDP's "module."
    removed. With `prefix`, keys starting with it are kept (prefix removed) when any do.
    `what` names the config key in the error when the file is missing."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(f"{what}={path} is not a file")
    state = torch.load(file, map_location="cpu", weights_only=True)
    return tempo_keys(state.get("state_dict", state), prefix)


def tempo_keys(state: Mapping[str, torch.Tensor], prefix: str | None = None) -> dict[str, torch.Tensor]:
    """`state` with DDP's "module." removed and, when any key starts with `prefix`, only those (prefix removed)."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if prefix and any(k.startswith(prefix) for k in state):
        state = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
    return state


def state_dict_mismatch(own: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor],
                        unexpected_ok: bool = True) -> str | None:
    """None when `state` fills every key of `own` with the right shape; else what is wrong. BatchNorm's
    `num_batches_tracked` may be missing (files saved before PyTorch 0.4.1 lack it; the network's own is kept)."""
    missing = sorted(k for k in own.keys() - state.keys() if not k.endswith(BN_COUNTER))
    unexpected = [] if unexpected_ok else sorted(state.keys() - own.keys())
    mismatch = sorted(f"{k} {tuple(state[k].shape)}≠{tuple(own[k].shape)}"
                      for k in own.keys() & state.keys() if own[k].shape != state[k].shape)
    if not (missing or unexpected or mismatch):
        return None
    parts = [f"{len(missing)} missing keys {missing[:5]}" if missing else "",
             f"{len(unexpected)} unexpected keys {unexpected[:5]}" if unexpected else "",
             f"{len(mismatch)} shape mismatches {mismatch[:5]}" if mismatch else ""]
    return ", ".join(p for p in parts if p)


def load_fitting(model: nn.Module, state: Mapping[str, torch.Tensor], what: str, hint: str = "",
                 skip: Sequence[str] = (), unexpected_ok: bool = True) -> int:
    """Load `state` into every key of `model` not starting with a `skip` prefix; a gap raises
    ValueError naming `what` and the keys, so a wrong file never half-loads silently."""
    own = {k: v for k, v in model.state_dict().items() if not k.startswith(tuple(skip))}
    state = {k: v for k, v in state.items() if not k.startswith(tuple(skip))}
    problem = state_dict_mismatch(own, state, unexpected_ok)
    if problem:
        raise ValueError(f"{what} does not fit this network: {problem}" + (f" ({hint})" if hint else ""))
    model.load_state_dict(with_bn_counters(own, {k: state[k] for k in own if k in state}), strict=False)
    return len(own)


def init_from_checkpoint(model: nn.Module, path: str, what: str = "model.network.init_checkpoint",
                         skip: Sequence[str] = ("fc.",), hint: str = "same network options needed") -> None:
    """Fine-tuning: initialise every tensor of `model` but the `skip` prefixes (the classifier, whose
    size changes from Kinetics to UCF/HMDB) from a tempo checkpoint (keys ``network.*``), a plain state dict,
    or a released file of another codebase (MMAction2 1.x, official TSM/TCM: `tempo.models.zoo`) or its
    `tempo.convert` output, whose backbone must fit; modules it lacks start fresh and are reported by module."""
    if not Path(path).expanduser().is_file():
        raise FileNotFoundError(f"{what}={path} is not a file; pass a tempo checkpoint such as "
                                "outputs/<date>/<time>/checkpoints/best-epoch049.ckpt or a released .pth")
    content = load_any(path, what)
    raw = tensors_of(content, path, what)
    if isinstance(content, Mapping) and "zoo" in content:  # a release converted by tempo.convert
        init_backbone(model, tempo_keys(raw, prefix="network."), f"converted {content['zoo'].get('layout')}",
                      path, skip)
        return
    if not any(k.startswith(("network.", "module.network.")) for k in raw):
        try:
            layout = detect_layout(raw.keys(), path)
        except CheckpointError:
            layout = None  # a plain state dict of this network
        if layout is not None:
            init_from_released(model, raw, layout, path, skip)
            return
    state = tempo_keys(raw, prefix="network.")
    count = load_fitting(model, state, f"{what}={path}", hint, skip)
    log.info("initialised %d tensors (all but %s) from %s", count, ", ".join(skip) or "none", path)


def read_backbone_weights(source: str, depth: int) -> dict[str, torch.Tensor]:
    """A ResNet-`depth` state dict in torchvision layout: `imagenet` (torchvision's release) or a file."""
    if source == "imagenet":
        if depth not in IMAGENET_URLS:
            raise ValueError(f"no ImageNet weights known for ResNet-{depth}")
        return torch.hub.load_state_dict_from_url(IMAGENET_URLS[depth], map_location="cpu",
                                                  progress=True, weights_only=True)
    try:
        return read_state_dict(source, "backbone.pretrained", prefix="backbone.")
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{err}; use null, imagenet or a .pth path") from None
