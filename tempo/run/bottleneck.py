"""Know when data is the bottleneck: per epoch, the share of each training step spent waiting
for the next batch, and the clips/s the loop reached; one warning when the loader starves the
model, with the fixes.

The wait of a step is the time from the end of the previous step (`on_train_batch_end`) to the
start of this one (`on_train_batch_start`, called once Lightning has the batch): the DataLoader
fetch and host→device copy. The first step of each epoch is left out (it pays worker start-up).
"""

from __future__ import annotations

import logging
import time

import lightning as L

from tempo.run.callbacks import skip_unused_batch_hooks

log = logging.getLogger(__name__)


@skip_unused_batch_hooks
class DataBottleneck(L.Callback):
    """Logs `data/wait_fraction` (Σ wait / Σ (wait + compute) over the epoch's steps, the mean of
    the per-step fractions weighted by step time) and `data/clips_per_s`; warns once when the
    fraction exceeds `warn_above`."""

    def __init__(self, warn_above: float = 0.3, skip_first: int = 1, clock=time.perf_counter):
        if not 0 < warn_above <= 1:
            raise ValueError(f"callbacks.data_bottleneck.warn_above={warn_above} must be in (0, 1]")
        self.warn_above = warn_above
        self.skip_first = skip_first
        self.clock = clock
        self.warned = False
        self.step_fractions: list[float] = []  # this epoch's per-step wait fractions
        self._reset()

    def _reset(self) -> None:
        self.waited = self.computed = 0.0
        self.clips = 0
        self.step_fractions = []
        self._step_end = self._step_start = None
        self._seen = 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._reset()
        self._step_end = self.clock()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        self._step_start = self.clock()
        self._wait = self._step_start - self._step_end if self._step_end is not None else 0.0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        now = self.clock()
        self._seen += 1
        if self._step_start is not None and self._seen > self.skip_first:
            compute = now - self._step_start
            self.waited += self._wait
            self.computed += compute
            self.clips += _batch_size(batch)
            if self._wait + compute > 0:
                self.step_fractions.append(self._wait / (self._wait + compute))
        self._step_end = now

    @property
    def wait_fraction(self) -> float | None:
        total = self.waited + self.computed
        return self.waited / total if total > 0 else None

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        fraction = self.wait_fraction
        if fraction is None:
            return
        clips_per_s = self.clips / (self.waited + self.computed)
        pl_module.log("data/wait_fraction", fraction, on_epoch=True, sync_dist=True)
        pl_module.log("data/clips_per_s", clips_per_s * trainer.world_size, on_epoch=True, sync_dist=True,
                      reduce_fx="mean")
        if fraction > self.warn_above and not self.warned and trainer.is_global_zero:
            self.warned = True
            workers = getattr(trainer.train_dataloader, "num_workers", "?")
            log.warning(
                "the data loader starves the model: %.0f%% of each training step waits for data "
                "(%.1f clips/s per process). Raise dataset.num_workers (now %s, up to the CPU cores per GPU), "
                "or convert the videos once with `python -m tempo.prepare dataset=... format=fast` "
                "(short side 256, a stored format the sparse decoder reads several times faster), or "
                "extract frames (extract_frames=true dataset.backend=frames).",
                100 * fraction, clips_per_s, workers)


def _batch_size(batch) -> int:
    video = batch.get("video") if isinstance(batch, dict) else batch[0] if isinstance(batch, (list, tuple)) else batch
    return int(video.shape[0]) if hasattr(video, "shape") else 0
