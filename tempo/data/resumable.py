"""The training order and every random draw of the data path as functions of (seed, epoch, index).

`SeededShuffle` is a `DistributedSampler` (Lightning keeps it under DDP instead of wrapping it):
each epoch's permutation comes from (seed, epoch) alone, process r of W takes positions r, r+W, …
— so W processes with batch b see, step by step, exactly the samples one process with batch W·b
sees — and it yields `(index, draw_seed)` keys. `draw_seed(seed, epoch, index)` seeds every random
draw made for that sample (clip offsets, crops, flips, scale jitter, a replacement for an
undecodable video) in whichever worker loads it, so the batches do not depend on `num_workers`,
on worker start-up order, or on what ran before in the process.

`ResumableLoader` is the training `DataLoader` that knows its position within the epoch: the
epoch and the number of samples, over all processes, the run has trained on in it. The data
module saves it in every checkpoint and hands it back on resume, before the loader's first pass,
which then skips those samples: a run resumed from a checkpoint saved in the middle of an epoch
continues with the batch the uninterrupted run trained on next. (Not through Lightning's
stateful-loader interface: Lightning restores that only when the loader is built after the
checkpoint is read, and tempo's schedules build it earlier, for `estimated_stepping_batches`.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
from torch.utils.data import DataLoader, Dataset, DistributedSampler


def draw_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for one sample's random draws in one epoch (SeedSequence mixes the three)."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch), int(index)]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


class SeededShuffle(DistributedSampler):
    """Shuffled `(index, draw_seed)` keys of this process's share of the epoch.

    `skip`: positions of this process's share already trained on (set by a mid-epoch resume,
    used by the next `__iter__` only).
    """

    def __init__(self, dataset: Dataset, seed: int = 0, num_replicas: int = 1, rank: int = 0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.skip = 0

    def __iter__(self) -> Iterator[tuple[int, int]]:
        skip, self.skip = self.skip, 0
        epoch, seed = self.epoch, self.seed
        indices = list(super().__iter__())[skip:]  # read now: a later set_epoch must not change this pass
        return ((index, draw_seed(seed, epoch, index)) for index in indices)


def epoch_progress(trainer) -> tuple[int, float]:
    """(batches of the current training epoch the trainer has finished, batches in its epoch after
    `limit_train_batches`). Checkpoints are saved after a batch; the loader itself runs ahead."""
    return trainer.fit_loop.epoch_loop.batch_progress.current.processed, trainer.num_training_batches


class ResumableLoader(DataLoader):
    """A training loader whose position within the epoch can be saved and resumed.

    `progress`: `epoch_progress` of the trainer that consumes the batches.
    """

    def __init__(self, *args, progress: Callable[[], tuple[int, float]], **kwargs):
        super().__init__(*args, **kwargs)
        self.progress = progress
        # Lightning rebuilds the loader with a SequentialSampler of its own for `overfit_batches`
        # (debug=overfit): a fixed order, so there is no position to keep
        self.resumable = isinstance(self.sampler, SeededShuffle)

    def position(self) -> dict:
        if not self.resumable:
            return {}
        done, epoch_batches = self.progress()
        return {"epoch": self.sampler.epoch, "epoch_finished": done >= epoch_batches,
                "samples": done * self.batch_size * self.sampler.num_replicas}

    def resume(self, state: dict) -> None:
        """Start the next pass where `position()` was taken."""
        if not self.resumable or not state:
            return
        sampler: SeededShuffle = self.sampler
        if state["epoch_finished"]:
            sampler.set_epoch(state["epoch"] + 1)
            return
        sampler.set_epoch(state["epoch"])
        if state["samples"] % sampler.num_replicas:
            raise ValueError(f"cannot resume {state['samples']} samples into the epoch over "
                             f"{sampler.num_replicas} processes: resume with the same global batch")
        sampler.skip = state["samples"] // sampler.num_replicas
