"""The synthetic set's variants (tempo/data/synthetic.py): default (8 classes) and hard (12 classes)."""

import hashlib
import json
import multiprocessing
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from tempo.data.flip import flip_label_map
from tempo.data.synthetic import SyntheticSpec, SyntheticVideos, _path_offsets, class_names, render_clip
from tests.conftest import compose_config


def test_class_names_and_flip_pairs():
    assert class_names() == [f"moving {d} {s}" for d in ("right", "left", "down", "up") for s in ("slowly", "fast")]
    hard = class_names("hard")
    assert len(hard) == 12 and hard[:3] == ["moving right slowly", "moving right fast", "moving right and back"]
    # a horizontal flip swaps every right/left class, "and back" included
    assert flip_label_map(hard)[:6] == [3, 4, 5, 0, 1, 2] and flip_label_map(hard)[6:] == list(range(6, 12))


def test_default_variant_keeps_the_cache_key_of_existing_sets():
    old_fields = {k: v for k, v in asdict(SyntheticSpec()).items() if k != "variant"}
    old_key = hashlib.sha1(json.dumps(old_fields, sort_keys=True).encode()).hexdigest()[:10]
    assert SyntheticSpec().key() == old_key != SyntheticSpec(variant="hard").key()


def test_bad_variant_names_the_key():
    with pytest.raises(ValueError, match=r"dataset\.variant.*'default', 'hard'"):
        SyntheticSpec(variant="harder")


def test_out_and_back_path_returns():
    offsets = _path_offsets("and back", 2.0, 16)
    assert offsets[0] == offsets[-1] == 0 and offsets.max() == offsets[7] == offsets[8] == pytest.approx(14.0)
    assert np.all(np.diff(offsets[:8]) > 0) and np.all(np.diff(offsets[8:]) < 0)
    assert np.allclose(_path_offsets("fast", 2.5, 16), 2.5 * np.arange(16))


def test_hard_clips_are_deterministic_and_the_camera_moves():
    spec = SyntheticSpec(variant="hard", num_frames=16, size=64)
    a = render_clip(2, spec, np.random.default_rng(5))
    b = render_clip(2, spec, np.random.default_rng(5))
    assert a.shape == (16, 64, 64, 3) and a.dtype == np.uint8 and np.array_equal(a, b)
    # the textured background pans: the first and last frames differ far beyond the ±12 pixel noise
    moving = [np.abs(c[0].astype(int) - c[-1].astype(int)).mean()
              for c in (render_clip(k, spec, np.random.default_rng(k)) for k in range(12))]
    assert np.median(moving) > 15


def test_hard_variant_through_the_config(tmp_path):
    cfg = compose_config(["dataset.variant=hard"], tmp_path)
    assert cfg.dataset.num_classes == 12 and cfg.dataset.datamodule.reader.variant == "hard"
    assert compose_config([], tmp_path / "d").dataset.num_classes == 8
    reader = SyntheticVideos(cache_dir=str(tmp_path / "cache"), train_per_class=1, val_per_class=1, num_frames=8,
                             size=32, variant="hard")
    train = reader("train")
    assert sorted(r.label for r in train.records) == list(range(12)) and train.class_names == class_names("hard")
    assert reader.root.parent == tmp_path / "cache" / "synthetic"
    assert (reader.root / "classes.txt").read_text().splitlines() == class_names("hard")


def _prepare_after(barrier, cache: str) -> str:
    barrier.wait()  # all processes start generating the same set at once
    return str(SyntheticVideos(cache_dir=cache, train_per_class=2, val_per_class=1, num_frames=8, size=32).prepare())


def test_processes_generating_the_same_set_at_once_all_get_it_whole(tmp_path):
    """Two pytest-xdist workers (or DDP ranks) sharing $TEMPO_CACHE_DIR may generate the same set at the
    same moment: each writes its own partial folder, one rename wins, nobody sees a half-written set."""
    context = multiprocessing.get_context("fork")
    barrier = context.Manager().Barrier(3)
    with context.Pool(3) as pool:
        roots = pool.starmap(_prepare_after, [(barrier, str(tmp_path))] * 3)
    root = Path(roots[0])
    assert set(roots) == {str(root)} and (root / "spec.json").is_file()
    listed = (root / "train.txt").read_text().split() + (root / "val.txt").read_text().split()
    videos = [root / p for p in listed[::2]]
    assert len(videos) == 3 * 8 and all(v.stat().st_size > 0 for v in videos)
    assert [p.name for p in root.parent.iterdir()] == [root.name]  # no partial folder left behind
