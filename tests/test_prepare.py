"""`python -m tempo.prepare`: checks, report, manifest, strict exit status and conversions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from tempo.data.manifest import FrameManifest
from tempo.data.sources import open_source
from tempo.prepare import PrepareError, has_problems, run
from tests.official_fixtures import (
    make_hmdb51,
    make_kinetics400,
    make_sthv1,
    make_ucf101,
    truncate_file,
    ucf_file_name,
)

REPO = Path(__file__).resolve().parents[1]
CONF_DIR = str(REPO / "conf")


def compose_prepare(tmp: Path, *overrides: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("prepare", overrides=[f"paths.output_dir={tmp / 'run'}", f"paths.cache_dir={tmp / 'cache'}",
                                             "workers=2", *overrides])


def prepare_cli(tmp: Path, *overrides: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "tempo.prepare", f"paths.cache_dir={tmp / 'cache'}", "workers=2",
               *overrides]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "200"})


@pytest.fixture
def damaged_hmdb(tmp_path) -> tuple[Path, Path, Path, Path]:
    """HMDB-51 (names with spaces and [ ] ( ) & ; !) with one missing and one truncated video."""
    root, ann = make_hmdb51(tmp_path / "data", num_classes=2)
    videos = sorted(root.rglob("*.avi"))
    missing = next(v for v in videos if "[HD]" in v.name)
    truncated = next(v for v in videos if "Jerry;" in v.name)
    missing.unlink()
    truncate_file(truncated)
    return root, ann, missing, truncated


@pytest.mark.slow
def test_prepare_reports_missing_and_truncated_and_exits_1_only_when_strict(damaged_hmdb, tmp_path):
    root, ann, missing, truncated = damaged_hmdb
    relaxed = prepare_cli(tmp_path, "dataset=hmdb51", f"root={root}", f"annotations={ann}",
                          f"hydra.run.dir={tmp_path / 'relaxed'}")
    assert relaxed.returncode == 0, relaxed.stderr[-3000:]
    report = json.loads((tmp_path / "relaxed" / "prepare_report.json").read_text())
    problems = {s: (v["missing"], [b["path"] for b in v["broken"]]) for s, v in report["subsets"].items()}
    found_missing = {p for m, _ in problems.values() for p in m}
    found_broken = {p for _, b in problems.values() for p in b}
    assert found_missing == {str(missing)} and found_broken == {str(truncated)}
    assert report["totals"] == {"ok": 4, "missing": 1, "broken": 1}
    text = (tmp_path / "relaxed" / "prepare_report.txt").read_text()
    assert str(missing) in text and str(truncated) in text
    assert "missing" in relaxed.stdout and "broken" in relaxed.stdout  # the summary table
    assert (tmp_path / "relaxed" / "manifest.json").is_file()

    strict = prepare_cli(tmp_path, "dataset=hmdb51", f"dataset.root={root}", f"dataset.annotations={ann}",
                         "strict=true", f"hydra.run.dir={tmp_path / 'strict'}")
    assert strict.returncode == 1
    assert "strict=true" in strict.stdout


@pytest.mark.slow
def test_prepare_strict_passes_on_clean_data(tmp_path):
    root, ann = make_hmdb51(tmp_path / "data", num_classes=2)
    result = prepare_cli(tmp_path, "dataset=hmdb51", f"root={root}", f"annotations={ann}", "strict=true",
                         "dataset.num_classes=2", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 0, result.stderr[-3000:]


def test_prepare_manifest_is_reused_by_training(tmp_path):
    root, ann = make_sthv1(tmp_path / "data", num_classes=3)
    report = run(compose_prepare(tmp_path, "dataset=sthv1", f"root={root}", f"annotations={ann}",
                                 "dataset.num_classes=3"))
    assert report["totals"] == {"ok": 11, "missing": 0, "broken": 0} and not has_problems(report)
    manifest = FrameManifest(root, tmp_path / "cache" / "manifests")
    assert len(manifest.entries) == 11 and {e[0] for e in manifest.entries.values()} == {8}
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.output_dir={tmp_path / 'train'}",
                                          f"paths.cache_dir={tmp_path / 'cache'}", "dataset=sthv1",
                                          f"dataset.root={root}", f"dataset.annotations={ann}",
                                          "dataset.num_classes=3", "dataset.num_workers=0"])
    dm = instantiate(cfg.dataset.datamodule)
    dm.setup("fit")
    assert dm.probed == {"train": 0, "val": 0}


def test_prepare_requires_root_and_reports_unreadable_annotations(tmp_path):
    with pytest.raises(PrepareError, match=r"root=/path"):
        run(compose_prepare(tmp_path, "dataset=k400"))
    root, ann = make_kinetics400(tmp_path / "data", num_classes=2, num_test=0)
    (ann / "test.csv").unlink()
    report = run(compose_prepare(tmp_path, "dataset=k400", f"root={root}", f"annotations={ann}"))
    assert "test.csv" in report["annotation_errors"]["test"] and has_problems(report)
    assert report["totals"] == {"ok": 6, "missing": 0, "broken": 0}


@pytest.mark.slow
def test_prepare_resizes_and_extracts_frames(tmp_path):
    root, ann = make_ucf101(tmp_path / "data", num_classes=2)
    data = ["dataset=ucf101", f"root={root}", f"annotations={ann}"]
    report = run(compose_prepare(tmp_path, *data, "resize_short_side=16", "gop=2"))
    resized = Path(report["conversion"]["output_root"])
    assert resized == root.with_name("UCF-101_short16") and report["conversion"]["converted"] == 6
    video = resized / "HandstandPushups" / ucf_file_name("HandstandPushups", 8, 1)
    frames = open_source(video, "pyav").read([0, 7])
    assert tuple(frames.shape) == (2, 16, 32, 3)

    report = run(compose_prepare(tmp_path, *data, "extract_frames=true", f"output_root={tmp_path / 'jpg'}"))
    assert report["conversion"]["converted"] == 6
    folder = tmp_path / "jpg" / "HandstandPushups" / ucf_file_name("HandstandPushups", 8, 1)
    assert sorted(p.name for p in folder.iterdir()) == [f"{i:05d}.jpg" for i in range(1, 9)]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.output_dir={tmp_path / 'train'}",
                                          f"paths.cache_dir={tmp_path / 'cache'}", "dataset=ucf101",
                                          f"dataset.root={tmp_path / 'jpg'}", f"dataset.annotations={ann}",
                                          "dataset.backend=frames", "dataset.num_classes=2", "dataset.num_workers=0",
                                          "dataset.num_segments=4", "dataset.input_size=32", "dataset.short_side=36"])
    dm = instantiate(cfg.dataset.datamodule)
    dm.setup("fit")
    assert dm.probed == {"train": 0, "val": 0}  # extraction wrote the counts
    assert dm.datasets["train"][0]["video"].shape == (3, 4, 32, 32)


@pytest.mark.slow
def test_prepare_format_fast_writes_the_fast_format_and_stores_its_index(tmp_path, capsys):
    """`format=fast` alone re-encodes to the benchmark's choice (a keyframe every 4 frames, P-frames
    between), prints its measured figures, stores each video's packet index for training, and the
    sparse decoder reads it exactly; `format=sparse_b16` writes non-reference B-frames between anchors."""
    import av

    from tempo.data.formats import FAST_FORMAT, FORMATS, MEASURED
    from tempo.data.packet_store import PacketIndexStore
    from tempo.data.sources import PyAVSource

    root, ann = make_ucf101(tmp_path / "data", num_classes=1)
    data = ["dataset=ucf101", f"root={root}", f"annotations={ann}", "subsets=[train]"]
    report = run(compose_prepare(tmp_path, *data, "format=fast", "resize_short_side=16"))
    printed = " ".join(capsys.readouterr().out.split())
    assert f"writing {FAST_FORMAT}" in printed and f"{MEASURED[FAST_FORMAT]['real'].psnr:.1f} dB" in printed
    video = next(Path(report["conversion"]["output_root"]).rglob("*.avi"))
    stored = PacketIndexStore(tmp_path / "cache" / "packet_index").load(str(video))
    gop = FORMATS[FAST_FORMAT]["gop"]
    assert stored is not None  # indexed at conversion
    assert np.flatnonzero(stored.keyframe).tolist() == list(range(0, len(stored.keyframe), gop))
    with av.open(str(video)) as container:
        full = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    source = PyAVSource(video, index_dir=tmp_path / "cache" / "packet_index")
    np.testing.assert_array_equal(source.read([6, 1]).numpy(), full[[6, 1]])

    report = run(compose_prepare(tmp_path, *data, "format=sparse_b16", "resize_short_side=16", "overwrite=true"))
    video = next(Path(report["conversion"]["output_root"]).rglob("*.avi"))
    source = PyAVSource(video)
    assert source._index.droppable.sum() >= 4  # most frames are non-reference B-frames
    with av.open(str(video)) as container:
        full = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    np.testing.assert_array_equal(source.read([6, 1]).numpy(), full[[6, 1]])
    with pytest.raises(PrepareError, match="format=webp is not a stored format"):
        run(compose_prepare(tmp_path, *data, "format=webp"))
    with pytest.raises(PrepareError, match="drop gop="):
        run(compose_prepare(tmp_path, *data, "format=intra", "gop=4"))


def test_every_stored_format_has_measured_figures():
    from tempo.data.formats import FORMATS, MEASURED

    assert set(MEASURED) == set(FORMATS)
    assert all(set(kinds) == {"calibrated", "real"} for kinds in MEASURED.values())


@pytest.mark.slow
def test_prepared_set_keeps_the_psnr_its_format_promises(tmp_path):
    """Kinetics-like clips (the benchmark's calibrated content, 12 frames) prepared with `format=fast`
    stay above the PSNR floor the format promises, on a few frames against their source."""
    from tempo.data.encode import write_video
    from tempo.data.formats import FAST_FORMAT, promised_psnr, psnr, squared_error
    from tempo.data.kinetics_like import kinetics_like

    root, lists = tmp_path / "videos", tmp_path / "lists"
    lists.mkdir()
    for seed in range(2):  # encoded like the benchmark's originals (x264 defaults, crf 23)
        write_video(root / "walking" / f"{seed}.mp4", kinetics_like(seed, n=12), fps=30, preset="medium",
                    quality=23, gop=250)
    (lists / "train.txt").write_text("walking/0.mp4 0\nwalking/1.mp4 0\n")
    report = run(compose_prepare(tmp_path, "dataset=list", f"root={root}", f"annotations={lists}",
                                 "dataset.num_classes=1", "subsets=[train]", "format=fast",
                                 f"output_root={tmp_path / 'prepared'}"))
    assert report["conversion"]["converted"] == 2
    ids, errors = [0, 3, 7, 10], []
    for seed in range(2):
        stored = open_source(tmp_path / "prepared" / "walking" / f"{seed}.mp4", "pyav").read(ids).numpy()
        assert stored.shape == (4, 256, 340, 3)
        errors.append(squared_error(root / "walking" / f"{seed}.mp4", stored, ids))
    assert psnr(float(np.mean(errors))) >= promised_psnr(FAST_FORMAT)


def _list_dataset(tmp: Path, labels: list[int]) -> tuple[Path, Path]:
    from tests.official_fixtures import write_clip

    root, ann = tmp / "videos", tmp / "lists"
    ann.mkdir(parents=True)
    for i, label in enumerate(labels):
        write_clip(root / f"v{i}.mp4", max(label, 0))
    (ann / "train.txt").write_text("".join(f"v{i}.mp4 {label}\n" for i, label in enumerate(labels)))
    (ann / "val.txt").write_text("v0.mp4 0\n")
    return root, ann


def test_prepare_checks_labels_as_training_does(tmp_path):
    root, ann = _list_dataset(tmp_path, [0, 1, 5])
    options = ["dataset=list", f"root={root}", f"annotations={ann}", "subsets=[train,val]"]
    report = run(compose_prepare(tmp_path, *options, "dataset.num_classes=2"))
    assert report["totals"] == {"ok": 3, "missing": 0, "broken": 0} and has_problems(report)
    labels = report["labels"]
    assert labels["subsets"]["train"]["labelled"] == 3 and labels["subsets"]["val"]["out_of_range"] == []
    assert labels["subsets"]["train"]["out_of_range"] == [
        {"where": f"{ann / 'train.txt'}:3", "path": str(root / "v2.mp4"), "label": 5}]
    assert labels["problems"] == [f"{ann / 'train.txt'}:3: {root / 'v2.mp4'} has label 5, outside [0, 2)"]
    assert "1 out of range" in (tmp_path / "run" / "prepare_report.txt").read_text()
    # the same labels with enough classes pass
    assert not has_problems(run(compose_prepare(tmp_path, *options, "dataset.num_classes=6")))


def test_prepare_names_the_line_of_a_negative_list_label(tmp_path):
    root, ann = _list_dataset(tmp_path, [0, -1])
    report = run(compose_prepare(tmp_path, "dataset=list", f"root={root}", f"annotations={ann}",
                                 "dataset.num_classes=2", "subsets=[train,val]"))
    error = report["annotation_errors"]["train"]
    assert f"{ann / 'train.txt'}:2: label -1 for v1.mp4" in error and "Kinetics" not in error
    assert has_problems(report)


@pytest.mark.slow
def test_prepare_strict_fails_on_wrong_labels(tmp_path):
    root, ann = _list_dataset(tmp_path, [0, 1, 5])
    result = prepare_cli(tmp_path, "dataset=list", f"root={root}", f"annotations={ann}", "dataset.num_classes=2",
                         "subsets=[train,val]", "strict=true", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 1 and "has label 5, outside [0, 2)" in result.stdout


def test_prepare_reports_a_text_file_in_a_list_as_broken(tmp_path):
    """A README renamed readme.txt in a list is no video: prepare's check reports it, naming it."""
    from tempo.data.encode import write_video

    root, lists = tmp_path / "videos", tmp_path / "lists"
    lists.mkdir()
    write_video(root / "a.mp4", np.zeros((4, 32, 32, 3), np.uint8))
    (root / "readme.txt").write_text("# tempo\n\nA training framework.\n" * 30)
    (lists / "train.txt").write_text("a.mp4 0\nreadme.txt 1\n")
    (lists / "val.txt").write_text("a.mp4 0\n")
    report = run(compose_prepare(tmp_path, "dataset=list", f"root={root}", f"annotations={lists}",
                                 "dataset.num_classes=2"))
    assert report["totals"] == {"ok": 1, "missing": 0, "broken": 1} and has_problems(report)
    [broken] = report["subsets"]["train"]["broken"]
    assert broken["path"] == str(root / "readme.txt")
    assert broken["error"].startswith("not a video: FFmpeg reads it as text")
