"""Long-video inference (`tempo.demo window=… stride=…`, `tempo.analysis.timeline`) on a real-encoded 10 s video:
windows cover the whole video, each window's frames are its sampler's picks in its span (against a direct read
through `VideoDataset`), every frame is decoded once, and the timeline's scores are the network's on those clips."""

import csv
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from PIL import Image

from tempo.analysis import timeline
from tempo.data.dataset import VideoDataset
from tempo.data.encode import write_video
from tempo.data.records import VideoRecord
from tempo.data.samplers import SegmentSampler
from tempo.data.transforms import Compose
from tempo.demo import run as demo
from tempo.run.config import ConfigError
from tempo.run.restore import load_evaluated
from tests.conftest import CONF_DIR, TINY, compose_config, train_tiny_checkpoint

FPS, SECONDS, SIDE = 10, 10, 48


def ten_second_video(path: Path) -> Path:
    """A square crossing the frame and a brightness ramp: every frame differs from its neighbours."""
    frames = []
    for t in range(FPS * SECONDS):
        frame = np.full((SIDE, SIDE, 3), 20 + 2 * t, np.uint8)
        x = (t * 3) % (SIDE - 12)
        frame[16:32, x:x + 12] = (230, 60, 40)
        frames.append(frame)
    return write_video(path, frames, fps=FPS)


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return ten_second_video(tmp_path_factory.mktemp("long") / "ten_seconds.mp4")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, synthetic_cache) -> str:
    return train_tiny_checkpoint(tmp_path_factory.mktemp("run"), synthetic_cache, "model=tsm")


def direct_clip(path: Path, window: timeline.Window, fps: float, sampler, transform) -> torch.Tensor:
    """The window's clip as the data pipeline reads a record bounded by the window's frames."""
    first, last = round(window.start * fps), round(window.end * fps)
    record = VideoRecord(str(path), num_frames=FPS * SECONDS, start=first, end=last)
    return VideoDataset([record], sampler, transform, backend="pyav").load(0, None)["video"]


def test_windows_cover_the_video_and_see_their_samplers_frames(video, tmp_path, monkeypatch):
    cfg = compose_config([*TINY, "model=tsm"], tmp_path)
    sampler = instantiate(cfg.dataset.datamodule.sampler)
    transform = Compose([instantiate(t) for t in cfg.dataset.datamodule.val_transforms if t is not None])
    num_frames, fps = timeline.video_timing(str(video))
    assert (num_frames, fps) == (FPS * SECONDS, FPS)
    windows = timeline.plan_windows(num_frames, fps, 2.0, 1.0, sampler)
    assert len(windows) >= 8
    assert [w.start for w in windows] == [float(s) for s in range(9)] and windows[-1].end == SECONDS
    # every second of the video lies in some window; window k's frames lie in its own span
    assert all(any(w.start <= s < w.end for w in windows) for s in np.arange(0, SECONDS, 0.1))
    for w in windows:
        assert w.start * fps <= w.frames.min() and w.frames.max() < w.end * fps

    opened, converted = [], []
    real_open = av.open
    monkeypatch.setattr(av, "open", lambda *a, **k: opened.append(a[0]) or real_open(*a, **k))
    from tempo.data import sparse_decode
    real_rgb = sparse_decode.to_rgb
    monkeypatch.setattr(sparse_decode, "to_rgb", lambda frame, *a: converted.append(frame.pts) or real_rgb(frame, *a))
    clips = dict(timeline.window_clips(str(video), windows, transform))
    monkeypatch.undo()
    # one pass over the file, each needed frame converted once although neighbouring windows share frames
    wanted = set(np.concatenate([w.frames for w in windows]).tolist())
    assert len(opened) == 1 and len(converted) == len(set(converted)) == len(wanted)
    assert sorted(clips) == list(range(len(windows)))
    for k, w in enumerate(windows):
        expected = direct_clip(video, w, fps, sampler, transform)
        assert clips[k].dtype == torch.uint8 and torch.equal(clips[k], expected), k


def test_a_video_shorter_than_the_window_is_one_window():
    windows = timeline.plan_windows(25, 10.0, 4.0, 1.0, SegmentSampler(4))
    assert len(windows) == 1 and (windows[0].start, windows[0].end) == (0.0, 2.5)
    assert windows[0].frames.tolist() == SegmentSampler(4).sample(25)[0].tolist()
    with pytest.raises(ValueError, match="positive"):
        timeline.plan_windows(25, 10.0, 2.0, 0.0, SegmentSampler(4))


def test_window_batch_groups_windows_without_changing_scores():
    clips = [(k, torch.full((3, 2, 4, 4), k, dtype=torch.uint8)) for k in (2, 0, 1, 3, 4)]  # out of order

    def classify(batch: torch.Tensor) -> torch.Tensor:
        sizes.append(len(batch))
        return torch.stack([batch[:, 0].float().mean((1, 2, 3)), -batch[:, 1].float().mean((1, 2, 3))], 1)

    sizes = []
    one = timeline.window_scores(iter(clips), classify, 5, batch_size=1)
    assert sizes == [1] * 5
    sizes = []
    three = timeline.window_scores(iter(clips), classify, 5, batch_size=3)
    assert sizes == [3, 2] and torch.allclose(one, three)
    assert one[:, 0].argsort().tolist() == [0, 1, 2, 3, 4]  # row k holds window k's scores


def run_demo(out: Path, *overrides: str) -> dict:
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("demo", overrides=[f"paths.output_dir={out}", *overrides])
    return demo(cfg, overrides=list(overrides))


def test_demo_timeline_csv_png_and_scores(checkpoint, video, tmp_path, one_thread, monkeypatch):
    batches = []
    real_batched = timeline.batched
    monkeypatch.setattr(timeline, "batched", lambda items, size: batches.append(size) or real_batched(items, size))
    overrides = [f"ckpt_path={checkpoint}", f"video={video}", "device=cpu"]
    result = run_demo(tmp_path / "out", *overrides, "window=2.0", "stride=1.0", "window_batch=4", "top_k=3")
    with open(result["csv"]) as handle:
        rows = list(csv.DictReader(handle))
    assert batches == [4]  # window_batch
    assert len(rows) >= 8 and float(rows[0]["start_s"]) == 0 and float(rows[-1]["end_s"]) == SECONDS
    assert [float(r["start_s"]) for r in rows] == [w.start for w in result["windows"]]
    assert list(rows[0]) == ["start_s", "end_s", "class_1", "score_1", "class_2", "score_2", "class_3", "score_3"]
    # window 4's scores are the network's on a direct read of that window
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("demo", overrides=[f"paths.output_dir={tmp_path}", *overrides])
    config, names, module = load_evaluated(cfg, overrides)
    datamodule = config.dataset.datamodule
    transform = Compose([instantiate(t) for t in datamodule.val_transforms if t is not None])
    clip = direct_clip(video, result["windows"][4], FPS, instantiate(datamodule.sampler), transform)
    with torch.no_grad():
        probs = module.network(module.on_after_batch_transfer({"video": clip[None]}, 0)["video"])["logits"][0]
    probs = probs.softmax(-1)
    assert torch.allclose(result["scores"][4], probs, atol=1e-5)
    assert rows[4]["class_1"] == names[int(probs.argmax())]
    assert float(rows[4]["score_1"]) == pytest.approx(float(probs.max()), abs=1e-4)
    image = np.asarray(Image.open(result["png"]).convert("RGB"))
    assert image.shape == (350, 1000, 3) and image.std() > 10
    assert len(result["classes"]) == 3
    assert not (tmp_path / "out" / "prediction.json").exists()


def test_stride_defaults_to_the_window_and_errors(checkpoint, video, tmp_path, one_thread):
    base = [f"ckpt_path={checkpoint}", f"video={video}", "device=cpu"]
    result = run_demo(tmp_path / "a", *base, "window=2.5")
    assert [(w.start, w.end) for w in result["windows"]] == [(0.0, 2.5), (2.5, 5.0), (5.0, 7.5), (7.5, 10.0)]
    with pytest.raises(ConfigError, match="gradcam"):
        run_demo(tmp_path / "b", *base, "window=2.0", "gradcam=true")
    with pytest.raises(ConfigError, match="views=test"):
        run_demo(tmp_path / "d", *base, "window=2.0", "views=test")
    with pytest.raises(ConfigError, match="window=-1"):
        run_demo(tmp_path / "c", *base, "window=-1")
