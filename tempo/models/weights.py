"""Reading weight files safely (`weights_only=True`): plain state dicts and Lightning checkpoints."""

from __future__ import annotations

from pathlib import Path

import torch


def read_state_dict(path: str | Path, what: str, prefix: str | None = None) -> dict[str, torch.Tensor]:
    """Tensors stored in `path` (a state dict or a `.ckpt` with "state_dict"), DDP's "module."
    removed. With `prefix`, keys starting with it are kept (prefix removed) when any do.
    `what` names the config key in the error when the file is missing."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(f"{what}={path} is not a file")
    state = torch.load(file, map_location="cpu", weights_only=True)
    state = {k.removeprefix("module."): v for k, v in state.get("state_dict", state).items()}
    if prefix and any(k.startswith(prefix) for k in state):
        state = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
    return state
