"""Silence start-up messages that are not the user's business (advertising tips, library
deprecations, warnings about hooks that are overridden on purpose)."""

from __future__ import annotations

import logging
import warnings

WARNINGS = (
    # the module normalises on the device in its batch-transfer hooks, on purpose
    r"You have overridden `on_(before|after)_batch_transfer` in `LightningModule` but have passed in a",
    # Lightning's use of a torch.utils._pytree API torch deprecated (not ours to fix)
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    # tempo's training loader resumes mid-epoch through the data module's state (tempo.data.resumable)
    r"You're resuming from a checkpoint that ended before the epoch ended and your dataloader is not resumable",
)
LOG_PREFIXES = (
    "💡 Tip:",  # Lightning's advertising for its cloud services
    "Trainer already configured with model summary callbacks",  # ours (tempo.run.callbacks.ParamSummary)
)
_installed = False


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).lstrip().startswith(LOG_PREFIXES)


def quiet_startup() -> None:
    """Install the filters (once per process)."""
    global _installed
    for message in WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    if _installed:
        return
    _installed = True
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
                 "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).addFilter(_DropTips())
