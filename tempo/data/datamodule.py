"""`VideoDataModule`: one LightningDataModule for every dataset.

A dataset config binds a *reader* (subset → `ParsedSplit`, e.g. an official-annotation
parser or the synthetic generator) plus sampling and transforms; this class checks the
records, applies the missing-data policy, fills frame counts from the cached manifest
and builds the loaders. Test-time views (clips × crops) come from the `test_views`
config group: `test_clips`, `test_transforms` and an optional `test_sampler`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Sequence

import lightning as L
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader

from tempo.data.dataset import VideoDataset
from tempo.data.manifest import FrameManifest
from tempo.data.problems import apply_missing_policy, check_labelled, report_broken
from tempo.data.records import ParsedSplit, VideoRecord, check_labels
from tempo.data.resumable import ResumableLoader, SeededShuffle, epoch_progress
from tempo.data.samplers import ConsecutiveSampler
from tempo.data.transforms import Compose
from tempo.errors import ConfigError

log = logging.getLogger(__name__)

SUBSETS = ("train", "val", "test")


def usable_workers(requested: int) -> int:
    """`requested` loader workers, at most the CPUs this process may use (torch warns beyond that, and
    the extra processes only compete for the same cores); says so when it lowers the number."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if requested <= cpus:
        return requested
    log.info("dataset.num_workers=%d lowered to %d, the CPUs available here", requested, cpus)
    return cpus


def common_root(records: Sequence[VideoRecord]) -> str:
    """The deepest folder holding every record (the manifest's key root)."""
    root = os.path.commonpath([os.path.abspath(r.path) for r in records])
    return root if os.path.isdir(root) and len(records) > 1 else os.path.dirname(root)


def with_clips(sampler, num_clips: int):
    """`sampler` taking `num_clips` clips per video (samplers without clips are returned as they are)."""
    if num_clips and dataclasses.is_dataclass(sampler) and hasattr(sampler, "num_clips"):
        return dataclasses.replace(sampler, num_clips=num_clips)
    return sampler


def _present(transforms: Sequence[Callable | None] | None) -> list[Callable]:
    """Transforms without the `null` entries config lists may hold (an optional resize)."""
    return [t for t in (transforms or ()) if t is not None]


class VideoDataModule(L.LightningDataModule):
    """Loaders for the train / val / test subsets a `reader` returns.

    reader: subset name → `ParsedSplit`; its class names become `class_names`.
    test_sampler: sampler for the test subset (default: `sampler` with `test_clips` clips);
        e.g. `ConsecutiveSampler` for all-windows testing.
    test_subset: which annotation subset the test stage reads ("val" where the official
        test set is unlabelled: Kinetics, Something-Something).
    num_workers: loader processes, at most the CPUs this process may use (more only slow it down);
    pin_memory: None = pinned when CUDA is available.
    manifest: fill frame counts from a `FrameManifest` cached in `manifest_dir` (probed once,
        in `manifest_workers` threads); `root` is its key (default: the records' common folder).
    seed: the training order and every random draw of the data path derive from (seed, epoch,
        sample index) (`tempo.data.resumable`); `tempo.train` passes the run's `seed`.
    """

    def __init__(
        self,
        reader: Callable[[str], ParsedSplit],
        num_classes: int,
        sampler,
        train_transforms: Sequence[Callable | None] = (),
        val_transforms: Sequence[Callable | None] = (),
        test_transforms: Sequence[Callable | None] | None = None,
        test_clips: int = 1,
        test_sampler=None,
        test_subset: str = "test",
        batch_size: int = 8,
        val_batch_size: int | None = None,
        test_batch_size: int | None = None,
        num_workers: int = 2,
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        prefetch_factor: int | None = None,
        backend: str = "pyav",
        source_kwargs: dict | None = None,
        allow_missing: bool = False,
        report_dir: str | None = None,
        class_names: Sequence[str] | None = None,
        manifest: bool = False,
        manifest_dir: str | None = None,
        manifest_workers: int | None = None,
        root: str | None = None,
        seed: int = 0,
    ):
        super().__init__()
        if test_subset not in SUBSETS:
            raise ValueError(f"test_subset must be one of {SUBSETS}, got {test_subset!r}")
        self.reader = reader
        self.num_classes = num_classes
        self.sampler = sampler
        self.train_transforms = _present(train_transforms)
        self.val_transforms = _present(val_transforms)
        self.test_transforms = _present(test_transforms) if test_transforms is not None else self.val_transforms
        self.test_clips = test_clips
        self.test_sampler = test_sampler
        self.test_subset = test_subset
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.test_batch_size = test_batch_size or 1
        self.num_workers = usable_workers(num_workers)
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.persistent_workers = persistent_workers and num_workers > 0
        self.prefetch_factor = prefetch_factor
        self.backend = backend
        self.source_kwargs = dict(source_kwargs or {})
        self.allow_missing = allow_missing
        self.report_dir = report_dir
        self.class_names: list[str] | None = list(class_names) if class_names else None
        self.manifest = manifest
        self.manifest_dir = manifest_dir
        self.manifest_workers = manifest_workers
        self.root = root
        self.seed = seed
        self._train_loader: ResumableLoader | None = None
        self._resume_at: dict | None = None  # a checkpoint's loader position, for the next train loader
        self.datasets: dict[str, VideoDataset] = {}
        self._records: dict[str, list[VideoRecord]] = {}
        self.probed: dict[str, int] = {}  # per subset: videos probed for frame counts (0 = all cached)
        self.broken: dict[str, str] = {}  # path → error of videos whose frames could not be counted
        self.dropped: dict[str, int] = {}  # per subset: missing videos dropped (allow_missing=true)
        if isinstance(test_sampler, ConsecutiveSampler) and self.test_batch_size != 1:
            raise ValueError(
                "consecutive-window testing gives each video its own number of views, which cannot "
                f"be batched; set `dataset.datamodule.test_batch_size=1` (got {self.test_batch_size})."
            )

    # -- records -------------------------------------------------------------------
    def annotation_subset(self, subset: str) -> str:
        """The annotation subset read for a stage subset (test → `test_subset`)."""
        return self.test_subset if subset == "test" else subset

    def records(self, subset: str) -> list[VideoRecord]:
        """Checked records of `subset` (read, checked and counted once, then reused)."""
        source = self.annotation_subset(subset)
        if source not in self._records:
            self._records[source] = self._load_records(source)
        return self._records[source]

    def _check_reader_paths(self) -> None:
        """A reader bound with root/annotations = None (config defaults) cannot read anything."""
        from tempo.data.paths import dataset_path_problem

        keywords = getattr(self.reader, "keywords", None) or {}
        for key in ("root", "annotations"):
            if key in keywords and keywords[key] is None:
                raise ConfigError(dataset_path_problem(None, key, None))

    def _load_records(self, subset: str) -> list[VideoRecord]:
        self._check_reader_paths()
        parsed = self.reader(subset=subset)
        if self.class_names is None:
            self.class_names = list(parsed.class_names)
        if len(parsed.class_names) != self.num_classes:
            raise ConfigError(
                f"the {subset} annotations define {len(parsed.class_names)} classes but "
                f"`dataset.num_classes` is {self.num_classes}; set it to {len(parsed.class_names)}."
            )
        check_labels(parsed.records, self.num_classes, f"{subset} annotations")
        check_labelled(parsed.records, subset)
        records = apply_missing_policy(parsed.records, subset, self.allow_missing, self.report_dir)
        self.dropped[subset] = len(parsed.records) - len(records)
        self._check_backend(records)
        if self.manifest and records:
            records = self._count_frames(records, subset)
        return records

    def _check_backend(self, records: list[VideoRecord]) -> None:
        """Frame folders need the `frames` backend and video files a video backend."""
        if not records or os.path.isdir(records[0].path) == (self.backend == "frames"):
            return
        if self.backend != "frames":
            raise ConfigError(f"{records[0].path} is a folder (of frames?) but the video backend is "
                             f"{self.backend!r}; set `dataset.backend=frames` (and the frame name template).")
        raise ConfigError(f"{records[0].path} is not a folder but the backend is 'frames' (JPEG folders); "
                         "set `dataset.backend=decord` (or pyav) for video files.")

    def _count_frames(self, records: list[VideoRecord], subset: str) -> list[VideoRecord]:
        manifest = FrameManifest(self.root or common_root(records), self.manifest_dir)
        filled = manifest.fill(records, workers=self.manifest_workers)
        self.probed[subset] = manifest.probed
        self.broken.update(manifest.failures)
        log.info("%s: frame counts of %d videos (%d probed, the rest from %s)", subset, len(filled),
                 manifest.probed, manifest.path)
        if manifest.failures:
            report_broken(manifest.failures, subset, self.report_dir)
        return filled

    def _dataset(self, subset: str) -> VideoDataset:
        train = subset == "train"
        transforms = {"train": self.train_transforms, "val": self.val_transforms,
                      "test": self.test_transforms}[subset]
        records = self.records(subset)
        self._bind_label_maps(transforms)
        sampler = self.test_sampler if subset == "test" and self.test_sampler is not None else self.sampler
        sampler = with_clips(sampler, 1 if subset != "test" else self.test_clips)
        return VideoDataset(records, sampler, Compose(transforms), train=train, multi_view=subset == "test",
                            backend=self.backend, source_kwargs=self.source_kwargs,
                            reported=self.broken.keys())

    def _bind_label_maps(self, transforms) -> None:
        """Flips configured with `swap_left_right` get the map derived from class names."""
        for t in transforms:
            if getattr(t, "swap_left_right", False) and t.label_map is None:
                from tempo.data.flip import flip_label_map, left_right_pairs

                t.label_map = flip_label_map(self.class_names)
                pairs = [(self.class_names[i], self.class_names[j]) for i, j in left_right_pairs(self.class_names)]
                log.info("horizontal flip swaps %d left/right class pairs: %s", len(pairs), pairs)

    def setup(self, stage: str | None = None) -> None:
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",),
                  "predict": ("test",), None: SUBSETS}[stage]
        for subset in wanted:
            if subset not in self.datasets:
                self.datasets[subset] = self._dataset(subset)

    # -- loaders -------------------------------------------------------------------
    def _eval_sampler(self, dataset) -> UnrepeatedDistributedSampler | None:
        """Under DDP, each process evaluates its own share of the videos, every video exactly once
        (Lightning's DistributedSampler would pad with repeats so shares are equal)."""
        trainer = self.trainer
        if trainer is None or trainer.world_size <= 1:
            return None
        return UnrepeatedDistributedSampler(dataset, num_replicas=trainer.world_size, rank=trainer.global_rank,
                                            shuffle=False)

    def _loader(self, subset: str, batch_size: int) -> DataLoader:
        """An evaluation loader: every video once, in order."""
        dataset = self.datasets[subset]
        return DataLoader(dataset, batch_size=batch_size, shuffle=False, sampler=self._eval_sampler(dataset),
                          **self._worker_options())

    def _worker_options(self) -> dict:
        extra = {"prefetch_factor": self.prefetch_factor} if self.prefetch_factor and self.num_workers else {}
        return {"num_workers": self.num_workers, "pin_memory": self.pin_memory,
                "persistent_workers": self.persistent_workers, **extra}

    def train_dataloader(self) -> DataLoader:
        """Shuffled by `SeededShuffle` (each process its share of one permutation per epoch), with
        the position within the epoch saved in checkpoints (`ResumableLoader`)."""
        dataset = self.datasets["train"]
        trainer = self.trainer
        replicas, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        loader = ResumableLoader(
            dataset, batch_size=self.batch_size, sampler=SeededShuffle(dataset, self.seed, replicas, rank),
            drop_last=len(dataset) > self.batch_size * replicas, progress=lambda: epoch_progress(self.trainer),
            **self._worker_options(),
        )
        if self._resume_at is not None:
            loader.resume(self._resume_at)
            self._resume_at = None
        self._train_loader = loader
        return loader

    def state_dict(self) -> dict:
        """Saved in checkpoints: the training loader's position within the epoch."""
        fitting = self.trainer is not None and self.trainer.state.fn == "fit"
        return {"train_position": self._train_loader.position()} if fitting and self._train_loader else {}

    def load_state_dict(self, state: dict) -> None:
        """Lightning hands this over before the loader is built (`train_dataloader` applies it)."""
        self._resume_at = state.get("train_position")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.val_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.test_batch_size)
