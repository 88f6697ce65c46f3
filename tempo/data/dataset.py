"""`VideoDataset`: records → sampled, decoded, transformed clips, with fault handling.

A video that cannot be decoded is logged once (per worker) with its path and error.
In training it is replaced by another random sample and the sample carries a count
(`failures`) that the LightningModule sums into the log; in evaluation a stand-in is
loaded but the sample is marked `valid=False`, so it is excluded from the metrics and
counted beside them. Nothing is dropped silently and nothing crashes the epoch.

Training keys are `(index, draw_seed)` (from `tempo.data.resumable.SeededShuffle`): every random
draw for the sample — frame offsets, transforms, the replacement of an undecodable video — comes
from `draw_seed`, so a sample is the same in any worker, with any number of workers, and after a
resume. A plain integer key in training draws its seed from torch's global generator.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from tempo.data.records import VideoRecord
from tempo.data.sources import DecodeError, FrameSource, open_source

log = logging.getLogger(__name__)

MAX_RETRIES = 10
class VideoDataset(Dataset):
    """One item: {"video": uint8 (C, T, H, W) — or (V, C, T, H, W) when `multi_view` —,
    "label": int64, "index": int64, "valid": bool, "failures": int64}."""

    def __init__(
        self,
        records: Sequence[VideoRecord],
        sampler,
        transform: Callable[[dict], dict] | None = None,
        train: bool = False,
        multi_view: bool = False,
        backend: str = "pyav",
        source_kwargs: dict | None = None,
        reported: Iterable[str] = (),
    ):
        self.records = list(records)
        self.sampler = sampler
        self.transform = transform
        self.train = train
        self.multi_view = multi_view
        self.backend = backend
        self.source_kwargs = dict(source_kwargs or {})
        # paths already logged (e.g. by the data module when counting frames): not logged again
        self._reported: set[str] = set(reported)

    def __len__(self) -> int:
        return len(self.records)

    def open(self, record: VideoRecord) -> FrameSource:
        kwargs = dict(self.source_kwargs)  # options of every backend: open_source hands each its own
        if self.backend == "frames" and record.num_frames is not None:
            kwargs["num_frames"] = record.num_frames  # from the manifest or a frame list: no rescan
        return open_source(record.path, self.backend, **kwargs)

    def load(self, index: int, rng: np.random.Generator | None) -> dict:
        record = self.records[index]
        source = self.open(record)
        total = source.num_frames if record.end is None else min(record.end, source.num_frames)
        usable = total - record.start
        if usable <= 0:
            raise DecodeError(record.path, f"no frames in [{record.start}, {record.end}) "
                                           f"(the video has {source.num_frames})")
        clips = self.sampler.sample(usable, rng) + record.start  # (V, T)
        unique, inverse = np.unique(clips, return_inverse=True)
        frames = source.read(unique)[torch.from_numpy(inverse.reshape(clips.shape))]  # (V, T, H, W, 3)
        sample = {"video": frames.permute(0, 1, 4, 2, 3), "label": record.label}  # (V, T, C, H, W)
        if self.transform is not None:
            sample = self.transform(sample)
        video = sample["video"].permute(0, 2, 1, 3, 4).contiguous()  # (V, C, T, H, W)
        return {"video": video if self.multi_view else video[0], "label": sample["label"]}

    def _report(self, err: DecodeError) -> None:
        if err.path not in self._reported:
            self._reported.add(err.path)
            log.warning("skipping undecodable video: %s", err)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        if isinstance(key, tuple | list):
            index, seed = int(key[0]), int(key[1])
        else:
            index, seed = int(key), int(torch.randint(0, 2**62, ())) if self.train else None
        if seed is None:
            return self._item(index, None)
        with torch.random.fork_rng(devices=[]):  # the transforms draw from torch's generator
            torch.manual_seed(seed)
            return self._item(index, np.random.default_rng(seed))

    def _item(self, index: int, rng: np.random.Generator | None) -> dict:
        failures = 0
        candidate = index
        for _ in range(MAX_RETRIES):
            try:
                sample = self.load(candidate, rng)
                break
            except DecodeError as err:
                self._report(err)
                failures += 1
                candidate = int(rng.integers(len(self.records))) if rng is not None else \
                    (candidate + 1) % len(self.records)
        else:
            raise RuntimeError(
                f"{MAX_RETRIES} videos in a row failed to decode (last around index {index}, "
                f"{self.records[index].path}). Run `python -m tempo.prepare` to find broken files."
            )
        return {
            "video": sample["video"],
            "label": torch.tensor(sample["label"], dtype=torch.long),
            "index": torch.tensor(index, dtype=torch.long),
            "valid": torch.tensor(self.train or failures == 0),
            "failures": torch.tensor(failures, dtype=torch.long),
        }
