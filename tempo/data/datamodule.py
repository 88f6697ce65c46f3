"""`VideoDataModule`: one LightningDataModule for every dataset.

A dataset config binds a *reader* (subset → `ParsedSplit`, e.g. an official-annotation
parser or the synthetic generator) plus sampling and transforms; this class checks the
records, applies the missing-data policy and builds the loaders.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import lightning as L
from torch.utils.data import DataLoader

from tempo.data.dataset import VideoDataset
from tempo.data.records import ParsedSplit, VideoRecord, check_labels
from tempo.data.transforms import Compose

log = logging.getLogger(__name__)

SUBSETS = ("train", "val", "test")


class MissingVideosError(FileNotFoundError):
    pass


def find_missing(records: Sequence[VideoRecord]) -> list[VideoRecord]:
    """Records whose file or frame folder does not exist (one stat each)."""
    return [r for r in records if not os.path.exists(r.path)]


def apply_missing_policy(records: list[VideoRecord], subset: str, allow_missing: bool,
                         report_dir: str | Path | None) -> list[VideoRecord]:
    missing = find_missing(records)
    if not missing:
        return records
    first = "\n  ".join(r.path for r in missing[:5])
    if not allow_missing:
        raise MissingVideosError(
            f"{len(missing)} of {len(records)} {subset} videos are missing, e.g.:\n  {first}\n"
            "Fix: check `dataset.root` (and the layout options), or run "
            "`python -m tempo.prepare dataset=<name> root=<videos> annotations=<files>` for a report; "
            "to train without them set `dataset.allow_missing=true` (the dropped list is written "
            "to the run directory)."
        )
    report = Path(report_dir or ".") / f"missing_{subset}.txt"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text("".join(r.path + "\n" for r in missing))
    log.warning("dropped %d missing %s videos (allow_missing=true); list written to %s",
                len(missing), subset, report)
    kept = set(map(id, missing))
    return [r for r in records if id(r) not in kept]


def _with_clips(sampler, num_clips: int):
    if num_clips and dataclasses.is_dataclass(sampler) and hasattr(sampler, "num_clips"):
        return dataclasses.replace(sampler, num_clips=num_clips)
    return sampler


class VideoDataModule(L.LightningDataModule):
    def __init__(
        self,
        reader: Callable[[str], ParsedSplit],
        num_classes: int,
        sampler,
        train_transforms: Sequence[Callable] = (),
        val_transforms: Sequence[Callable] = (),
        test_transforms: Sequence[Callable] | None = None,
        test_clips: int = 1,
        batch_size: int = 8,
        val_batch_size: int | None = None,
        test_batch_size: int | None = None,
        num_workers: int = 2,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        prefetch_factor: int | None = None,
        backend: str = "decord",
        source_kwargs: dict | None = None,
        allow_missing: bool = False,
        report_dir: str | None = None,
        class_names: Sequence[str] | None = None,
    ):
        super().__init__()
        self.reader = reader
        self.num_classes = num_classes
        self.sampler = sampler
        self.train_transforms = list(train_transforms)
        self.val_transforms = list(val_transforms)
        self.test_transforms = list(test_transforms) if test_transforms is not None else self.val_transforms
        self.test_clips = test_clips
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.test_batch_size = test_batch_size or 1
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers and num_workers > 0
        self.prefetch_factor = prefetch_factor
        self.backend = backend
        self.source_kwargs = dict(source_kwargs or {})
        self.allow_missing = allow_missing
        self.report_dir = report_dir
        self.class_names: list[str] | None = list(class_names) if class_names else None
        self.datasets: dict[str, VideoDataset] = {}

    # -- records -------------------------------------------------------------------
    def records(self, subset: str) -> list[VideoRecord]:
        parsed = self.reader(subset)
        if self.class_names is None:
            self.class_names = list(parsed.class_names)
        if len(parsed.class_names) != self.num_classes:
            raise ValueError(
                f"the {subset} annotations define {len(parsed.class_names)} classes but "
                f"`dataset.num_classes` is {self.num_classes}; set it to {len(parsed.class_names)}."
            )
        check_labels(parsed.records, self.num_classes, f"{subset} annotations")
        return apply_missing_policy(parsed.records, subset, self.allow_missing, self.report_dir)

    def _dataset(self, subset: str) -> VideoDataset:
        train = subset == "train"
        transforms = {"train": self.train_transforms, "val": self.val_transforms,
                      "test": self.test_transforms}[subset]
        records = self.records(subset)
        self._bind_label_maps(transforms)
        sampler = _with_clips(self.sampler, 1 if subset != "test" else self.test_clips)
        return VideoDataset(records, sampler, Compose(transforms), train=train, multi_view=subset == "test",
                            backend=self.backend, source_kwargs=self.source_kwargs)

    def _bind_label_maps(self, transforms) -> None:
        """Flips configured with `swap_left_right` get the map derived from class names."""
        for t in transforms:
            if getattr(t, "swap_left_right", False) and t.label_map is None:
                from tempo.data.flip import flip_label_map

                t.label_map = flip_label_map(self.class_names)

    def setup(self, stage: str | None = None) -> None:
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",),
                  "predict": ("test",), None: SUBSETS}[stage]
        for subset in wanted:
            if subset not in self.datasets:
                self.datasets[subset] = self._dataset(subset)

    # -- loaders -------------------------------------------------------------------
    def _loader(self, subset: str, batch_size: int, shuffle: bool) -> DataLoader:
        extra = {"prefetch_factor": self.prefetch_factor} if self.prefetch_factor and self.num_workers else {}
        dataset = self.datasets[subset]
        return DataLoader(
            dataset, batch_size=batch_size, shuffle=shuffle, drop_last=shuffle and len(dataset) > batch_size,
            num_workers=self.num_workers, pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers, **extra,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.val_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.test_batch_size, shuffle=False)
