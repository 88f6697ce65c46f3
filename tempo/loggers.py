"""Logger factories that need more than a `_target_` (W&B's offline fallback)."""

from __future__ import annotations

import logging
import netrc
import os

log = logging.getLogger(__name__)


def wandb_has_key() -> bool:
    """True when W&B could authenticate: WANDB_API_KEY or a `wandb login` netrc entry."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].split("/")[0]
    try:
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def wandb_logger(offline: bool | None = None, **kwargs):
    """A Lightning `WandbLogger` that runs offline when no API key is configured.

    `offline=None` decides by itself; `WANDB_MODE=offline|disabled` is honoured as well.
    """
    from lightning.pytorch.loggers import WandbLogger

    mode = os.environ.get("WANDB_MODE", "")
    if offline is None:
        offline = mode in ("offline", "dryrun") or (mode != "disabled" and not wandb_has_key())
        if offline and mode not in ("offline", "dryrun"):
            log.warning("no W&B API key found: logging offline; sync later with `wandb sync`")
            print("W&B: no API key configured, logging offline (sync later with `wandb sync`).")
    os.makedirs(kwargs.get("save_dir") or ".", exist_ok=True)
    return WandbLogger(offline=offline, **kwargs)
