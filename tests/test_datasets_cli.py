"""The six benchmark datasets end to end: official-layout fixtures → `dataset=<name>` configs →
VideoDataModule (class order, flips, views, manifest, missing/broken data) → `tempo.train`.

Fixtures are tiny (32×64 px, 8-12 frames, a handful of videos per class); every run uses
resnet_tiny, 4 segments of 32 px and 2 optimisation steps.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from tempo.data.datamodule import VideoDataModule
from tempo.data.problems import MissingVideosError
from tempo.data.records import AnnotationError
from tempo.run.config import ConfigError
from tempo.train import run
from tests.official_fixtures import (
    HMDB_CLASSES,
    K400_CLASSES,
    NUM_CLASSES,
    SSV1_CLASSES,
    UCF_CLASSES,
    make_diving48,
    make_hmdb51,
    make_kinetics400,
    make_sthv1,
    make_sthv2,
    make_ucf101,
    sizes,
    truncate_file,
    ucf_file_name,
)
from tests.official_fixtures import TINY_RUN as TINY

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")
REPO = Path(__file__).resolve().parents[1]
DATASETS = ("k400", "sthv1", "sthv2", "ucf101", "hmdb51", "diving48")
def data_overrides(name: str, root: Path, annotations: Path) -> list[str]:
    return [f"dataset={name}", f"dataset.root={root}", f"dataset.annotations={annotations}",
            f"dataset.num_classes={NUM_CLASSES[name]}", *sizes(name)]


def compose_train(tmp: Path, name: str, root: Path, annotations: Path, *overrides: str,
                  cache: Path | None = None):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("train", overrides=[
            f"paths.output_dir={tmp / 'run'}", f"paths.cache_dir={cache or tmp / 'cache'}", *TINY,
            *data_overrides(name, root, annotations), *overrides])


def datamodule(cfg, report_dir: Path | None = None) -> VideoDataModule:
    return instantiate(cfg.dataset.datamodule, report_dir=str(report_dir) if report_dir else None)


@pytest.fixture(scope="session")
def built(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """Each dataset once per session, in its exact official layout."""
    base = tmp_path_factory.mktemp("datasets")
    return {
        "k400": make_kinetics400(base / "k400"),
        "sthv1": make_sthv1(base / "sthv1", num_classes=5),
        "sthv2": make_sthv2(base / "sthv2"),
        "ucf101": make_ucf101(base / "ucf"),
        "hmdb51": make_hmdb51(base / "hmdb"),
        "diving48": make_diving48(base / "diving"),
    }


@pytest.fixture(scope="session")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


def setup_fit(built, name: str, tmp_path: Path, *overrides: str, cache: Path | None = None) -> VideoDataModule:
    cfg = compose_train(tmp_path, name, *built[name], *overrides, cache=cache)
    dm = datamodule(cfg, tmp_path / "run")
    dm.setup("fit")
    return dm


# -- configs -------------------------------------------------------------------------------------
def test_every_dataset_config_has_the_shared_keys(built, tmp_path):
    shared = ("name", "num_classes", "num_segments", "input_size", "batch_size", "num_workers", "test_clips",
              "test_reduce", "test_chunk", "root", "annotations", "test_views")
    for name in (*DATASETS, "list"):
        root, ann = built.get(name, built["ucf101"])
        cfg = compose_train(tmp_path, name if name != "list" else "ucf101", root, ann, f"dataset={name}")
        assert all(k in cfg.dataset for k in shared), name
        OmegaConf.to_container(cfg.dataset, resolve=True)  # every interpolation resolves


def test_missing_dataset_folders_name_the_paths_and_the_fixes(tmp_path, monkeypatch):
    monkeypatch.setenv("TEMPO_DATA_DIR", str(tmp_path / "nodata"))
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.output_dir={tmp_path}", "dataset=ucf101"])
    with pytest.raises(ConfigError) as err:
        run(cfg)
    message = str(err.value)
    for folder in ("ucf101/UCF-101", "ucf101/ucfTrainTestlist"):
        assert f"{tmp_path / 'nodata' / folder} does not exist" in message
    assert "put the data there" in message and "TEMPO_DATA_DIR" in message
    assert "dataset.root=/path/to/videos dataset.annotations=/path/to/annotations" in message
    # the generic list set has no standard place: it must be given
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.output_dir={tmp_path}", "dataset=list"])
    with pytest.raises(ConfigError, match=r"dataset.root is not set"):
        run(cfg)
    with pytest.raises(ValueError, match=r"dataset.root is not set"):
        datamodule(cfg).setup("fit")


def test_paper_default_views_and_cli_override(built, tmp_path):
    views = {"k400": "10x3", "sthv1": "1x1", "sthv2": "1x1", "ucf101": "2x1", "hmdb51": "2x1", "diving48": "1x1"}
    for name, expected in views.items():
        cfg = compose_train(tmp_path, name, *built[name])
        assert cfg.dataset.test_views == expected, name
    cfg = compose_train(tmp_path, "k400", *built["k400"], "test_views=1x1")
    assert (cfg.dataset.test_views, cfg.dataset.test_clips) == ("1x1", 1)
    assert cfg.dataset.datamodule.test_transforms[1]._target_.endswith("CenterCrop")


# -- class order ---------------------------------------------------------------------------------
def test_class_order_follows_the_official_files(built, tmp_path, cache):
    names = {name: setup_fit(built, name, tmp_path / name, cache=cache).class_names
             for name in ("sthv1", "k400", "ucf101", "hmdb51")}
    assert names["sthv1"] == list(SSV1_CLASSES)  # labels-file line order, not alphabetical
    assert names["sthv1"] != sorted(SSV1_CLASSES)
    assert names["k400"] == sorted(K400_CLASSES[:3])
    assert names["ucf101"] == list(UCF_CLASSES)  # classInd order (JumpingJack before JumpRope)
    assert names["ucf101"] != sorted(UCF_CLASSES)
    assert names["hmdb51"] == sorted(HMDB_CLASSES[:3])  # sorted names of the split files


def test_sthv1_sorted_label_order_option(built, tmp_path, cache):
    dm = setup_fit(built, "sthv1", tmp_path, "dataset.label_order=sorted", cache=cache)
    assert dm.class_names == sorted(SSV1_CLASSES)
    by_name = {name: i for i, name in enumerate(dm.class_names)}
    ann = built["sthv1"][1] / "something-something-v1-train.csv"
    expected = {line.split(";")[0]: by_name[line.split(";")[1]] for line in ann.read_text().splitlines()}
    assert {Path(r.path).name: r.label for r in dm.records("train")} == expected


# -- horizontal flip ----------------------------------------------------------------------------
@pytest.mark.parametrize("name, pair", [("sthv1", (2, 4)), ("sthv2", (1, 2))])
def test_flip_swaps_left_right_classes_only(built, tmp_path, cache, name, pair):
    dm = setup_fit(built, name, tmp_path, "dataset.datamodule.train_transforms.2.p=1.0", cache=cache)
    left, right = pair
    assert "left" in dm.class_names[left].lower() and "right" in dm.class_names[right].lower()
    train = dm.datasets["train"]
    seen = set()
    for i, record in enumerate(train.records):
        label = int(train[i]["label"])
        expected = {left: right, right: left}.get(record.label, record.label)
        assert label == expected, (dm.class_names[record.label], dm.class_names[label])
        seen.add(record.label)
    assert {left, right} <= seen and len(seen) == NUM_CLASSES[name]


def test_flip_keeps_labels_when_not_flipping(built, tmp_path, cache):
    dm = setup_fit(built, "sthv1", tmp_path, "dataset.datamodule.train_transforms.2.p=0.0", cache=cache)
    train = dm.datasets["train"]
    assert [int(train[i]["label"]) for i in range(len(train))] == [r.label for r in train.records]


# -- views, manifest ------------------------------------------------------------------------------
@pytest.mark.parametrize("views, expected", [("1x1", 1), ("2x1", 2), ("10x3", 30), ("consecutive", 2)])
def test_test_views_shape(built, tmp_path, cache, views, expected):
    # diving48 test clips have 12 frames: 4-frame windows every 2 frames span 7, a new one every 4
    # frames → windows starting at 0 and 4
    cfg = compose_train(tmp_path, "diving48", *built["diving48"], f"test_views={views}", cache=cache)
    dm = datamodule(cfg)
    dm.setup("test")
    item = dm.datasets["test"][0]
    assert tuple(item["video"].shape) == (expected, 3, 4, 32, 32)
    batch = next(iter(dm.test_dataloader()))
    assert batch["video"].shape[:2] == (1, expected) and batch["video"].dtype == torch.uint8


def test_consecutive_views_need_test_batch_size_one(built, tmp_path):
    cfg = compose_train(tmp_path, "diving48", *built["diving48"], "test_views=consecutive",
                        "dataset.datamodule.test_batch_size=2")
    with pytest.raises(InstantiationException, match="test_batch_size=1"):
        datamodule(cfg)


def test_frame_counts_cached_in_the_manifest(built, tmp_path):
    cache = tmp_path / "cache"
    first = setup_fit(built, "sthv1", tmp_path / "a", cache=cache)
    assert first.probed == {"train": 10, "val": 5}
    assert all(r.num_frames == 8 for r in first.records("train"))
    assert (cache / "manifests").is_dir()
    again = setup_fit(built, "sthv1", tmp_path / "b", cache=cache)
    assert again.probed == {"train": 0, "val": 0}  # a new run reads the counts, no rescan
    record = again.records("train")[0]
    source = again.datasets["train"].open(record)
    assert source.num_frames == 8 and source.read([0, 7]).shape == (2, 32, 64, 3)


def test_unlabelled_official_test_set_is_refused_with_the_fix(built, tmp_path):
    cfg = compose_train(tmp_path, "k400", *built["k400"], "dataset.test_subset=test")
    dm = datamodule(cfg)
    with pytest.raises(AnnotationError, match=r"dataset.test_subset=val"):
        dm.setup("test")


def test_wrong_backend_for_frame_folders_is_named(built, tmp_path, cache):
    cfg = compose_train(tmp_path, "sthv1", *built["sthv1"], "dataset.backend=decord", cache=cache)
    with pytest.raises(ValueError, match="dataset.backend=frames"):
        datamodule(cfg).setup("fit")


def test_generic_list_config(built, tmp_path, cache):
    root, ann = built["ucf101"]
    lists = tmp_path / "lists"
    lists.mkdir()
    videos = sorted(p.relative_to(root) for p in root.rglob("*.avi"))
    classes = sorted({v.parts[0] for v in videos})
    lines = [f"{v} {classes.index(v.parts[0])}\n" for v in videos]
    (lists / "train.txt").write_text("".join(lines))
    (lists / "val.txt").write_text("".join(lines[::3]))
    (lists / "classes.txt").write_text("\n".join(classes) + "\n")
    cfg = compose_train(tmp_path, "ucf101", root, lists, "dataset=list", "dataset.classes=classes.txt",
                        cache=cache)
    dm = datamodule(cfg)
    dm.setup("fit")
    assert dm.class_names == classes and len(dm.datasets["train"]) == len(videos)
    assert dm.datasets["train"][0]["video"].shape == (3, 4, 32, 32)


# -- missing and broken data -------------------------------------------------------------------
def test_missing_video_fails_setup_with_the_fix(tmp_path):
    root, ann = make_ucf101(tmp_path / "data", num_classes=2)
    (root / "ApplyEyeMakeup" / "v_ApplyEyeMakeup_g08_c01.avi").unlink()
    cfg = compose_train(tmp_path, "ucf101", root, ann, "dataset.num_classes=2")
    with pytest.raises(MissingVideosError) as err:
        datamodule(cfg, tmp_path / "run").setup("fit")
    message = str(err.value)
    assert "1 of 4 train videos are missing" in message and "v_ApplyEyeMakeup_g08_c01.avi" in message
    assert "dataset.root" in message and "tempo.prepare" in message and "allow_missing" in message


@pytest.mark.slow
def test_missing_and_truncated_videos_end_to_end(tmp_path):
    """allow_missing drops and lists the missing video; a truncated video is replaced (and counted)
    in training and excluded (and counted) in test."""
    root, ann = make_ucf101(tmp_path / "data", num_classes=2)
    missing = root / "ApplyEyeMakeup" / "v_ApplyEyeMakeup_g08_c01.avi"
    missing.unlink()
    broken_train = truncate_file(root / "HandstandPushups" / ucf_file_name("HandstandPushups", 15, 1))
    truncate_file(root / "HandstandPushups" / ucf_file_name("HandstandPushups", 1, 1))  # split-1 test
    cfg = compose_train(tmp_path, "ucf101", root, ann, "dataset.num_classes=2", "dataset.allow_missing=true")
    summary = run(cfg)
    run_dir = Path(summary["run_dir"])
    assert (run_dir / "missing_train.txt").read_text() == f"{missing}\n"
    assert str(broken_train) in (run_dir / "broken_train.txt").read_text()
    assert summary["decode_failures"] > 0
    assert summary["excluded"]["test"] == 1 and summary["test"]["test/excluded"] == 1.0


# -- training runs ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_cli_train_and_10x3_test_ucf101(built, tmp_path):
    root, ann = built["ucf101"]
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "tempo.train", *TINY, *data_overrides("ucf101", root, ann),
               "test_views=10x3", f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "WANDB_MODE": "offline"}
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["dataset"] == "ucf101" and summary["global_step"] == 2
    assert {"test/top1", "test/top5", "test/mean_class", "test/excluded"} <= set(summary["test"])
    resolved = OmegaConf.load(run_dir / "config_resolved.yaml")
    assert resolved.dataset.test_clips == 10 and resolved.dataset.test_views == "10x3"


@pytest.mark.slow
@pytest.mark.parametrize("name, views", [("k400", "10x3"), ("sthv1", "2x1"), ("sthv2", "2x1"),
                                         ("hmdb51", "2x1"), ("diving48", "consecutive")])
def test_train_and_multiview_test_in_process(built, tmp_path, cache, name, views):
    cfg = compose_train(tmp_path, name, *built[name], f"test_views={views}", "dataset.test_chunk=4",
                        "dataset.test_reduce=score", cache=cache)
    summary = run(cfg)
    assert summary["dataset"] == name and summary["global_step"] == 2
    assert {"test/top1", "test/excluded"} <= set(summary["test"])
    assert summary["excluded"]["test"] == 0 and summary["decode_failures"] == 0


@pytest.mark.parametrize("rank", [0, 1])
def test_only_the_first_ddp_process_writes_problem_lists(rank, tmp_path, monkeypatch):
    """Every process finds the same missing and broken videos; one list each, from rank 0."""
    from lightning.pytorch.utilities import rank_zero_only

    from tempo.data.problems import apply_missing_policy, report_broken
    from tempo.data.records import VideoRecord

    monkeypatch.setattr(rank_zero_only, "rank", rank)
    kept = VideoRecord(str(tmp_path), 0)
    records = [kept, VideoRecord(str(tmp_path / "gone.mp4"), 1)]
    assert apply_missing_policy(records, "train", True, tmp_path / "run") == [kept]
    report_broken({str(tmp_path / "bad.mp4"): "truncated"}, "train", tmp_path / "run")
    written = sorted(p.name for p in (tmp_path / "run").glob("*.txt")) if (tmp_path / "run").exists() else []
    assert written == (["broken_train.txt", "missing_train.txt"] if rank == 0 else [])
