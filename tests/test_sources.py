"""Decoders: decord vs PyAV equality on test-made mp4/webm, JPEG folders, bad files."""

from pathlib import Path

import numpy as np
import pytest
import torch

from tempo.data import sources
from tempo.data.encode import write_packed_bframes_avi, write_video
from tempo.data.sources import DecodeError, DecordSource, FrameFolderSource, PyAVSource, open_source


def moving_bar(n=12, h=32, w=64):
    frames = np.zeros((n, h, w, 3), np.uint8)
    for t in range(n):
        frames[t, :, 3 * t : 3 * t + 6] = (200, 80, 30)
        frames[t, t % h] = 255
    return frames


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    videos = {ext: write_video(root / f"clip{ext}", moving_bar(), gop=4) for ext in (".mp4", ".webm")}
    return {**videos, ".avi": write_packed_bframes_avi(root / "clip.avi", moving_bar(), gop=4)}  # as UCF-101


@pytest.mark.parametrize("ext", [".mp4", ".webm", ".avi"])
def test_decord_equals_pyav(videos, ext, monkeypatch):
    dec, pyav = DecordSource(videos[ext]), PyAVSource(videos[ext])
    assert dec.num_frames == pyav.num_frames == 12
    idx = [0, 3, 3, 7, 11]
    b = pyav.read(idx)

    def no_fallback(*args, **kwargs):
        raise AssertionError("decord fell back to PyAV: the comparison would be PyAV against itself")

    monkeypatch.setattr(sources, "PyAVSource", no_fallback)  # what DecordSource.read falls back to
    a = dec.read(idx)
    assert a.shape == (5, 32, 64, 3) and a.dtype == torch.uint8
    # both go through FFmpeg's decoder; allow tiny colour-conversion rounding differences
    assert (a.int() - b.int()).abs().max() <= 2
    np.testing.assert_array_equal(a[1], a[2])


def test_decoded_content_is_the_encoded_motion(videos):
    frames = DecordSource(videos[".mp4"]).read([0, 10]).float()
    row = frames[:, 20, :, 0]  # red channel of one row, (2, W)
    centres = [(r > 100).nonzero().float().mean().item() for r in row]
    assert centres[1] - centres[0] == pytest.approx(30, abs=1.5)


def test_frame_folder_source(tmp_path):
    from PIL import Image

    folder = tmp_path / "vid"
    folder.mkdir()
    frames = moving_bar(6)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"{i + 1:05d}.png")
    src = FrameFolderSource(folder, template="{:05d}.png", start_index=1)
    assert src.num_frames == 6
    np.testing.assert_array_equal(src.read([0, 5]).numpy(), frames[[0, 5]])
    jpg = tmp_path / "jpg"
    jpg.mkdir()
    for i, f in enumerate(frames):
        Image.fromarray(f).save(jpg / f"img_{i:05d}.jpg", quality=95)
    src = open_source(jpg, "frames", template="img_{:05d}.jpg", start_index=0)
    assert src.read([2]).shape == (1, 32, 64, 3)
    with pytest.raises(DecodeError, match="outside"):
        src.read([6])


def test_missing_file_names_path(tmp_path):
    path = tmp_path / "nope.mp4"
    with pytest.raises(DecodeError, match="does not exist") as err:
        open_source(path)
    assert str(path) in str(err.value)


def test_empty_file_names_path(tmp_path):
    path = tmp_path / "empty.mp4"
    path.write_bytes(b"")
    for backend in ("decord", "pyav"):
        with pytest.raises(DecodeError, match="0 bytes") as err:
            open_source(path, backend)
        assert str(path) in str(err.value)


def truncate(src: Path, dst: Path, keep: float = 0.3) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * keep)])
    return dst


def test_truncated_mp4_gives_decode_error_with_path(videos, tmp_path):
    bad = truncate(videos[".mp4"], tmp_path / "truncated.mp4")
    with pytest.raises(DecodeError) as err:
        src = open_source(bad)
        src.read(list(range(src.num_frames)))
    assert str(bad) in str(err.value)


def test_unknown_backend():
    with pytest.raises(ValueError, match="pyav, decord or frames"):
        open_source("x.mp4", "opencv")


def test_decord_failure_falls_back_to_pyav(tmp_path):
    # decord 0.6 cannot copy 48×32 frames out (a size bug FFmpeg does not have)
    path = write_video(tmp_path / "w48.mp4", moving_bar(w=48))
    frames = DecordSource(path).read([0, 5])
    np.testing.assert_array_equal(frames.numpy(), PyAVSource(path).read([0, 5]).numpy())


@pytest.mark.parametrize("env", [{"TEMPO_CACHE_DIR": "tc", "XDG_CACHE_HOME": "xdg"}, {"XDG_CACHE_HOME": "xdg"}, {}])
def test_cache_dir_default_is_one_rule(env, tmp_path, monkeypatch):
    """conf/paths' cache_dir, the synthetic set and the frame manifests agree on the cache folder."""
    from hydra import compose, initialize_config_dir

    from tempo.data.cache import default_cache_dir
    from tempo.data.manifest import FrameManifest
    from tempo.data.synthetic import SyntheticVideos
    from tests.conftest import CONF_DIR

    for key in ("TEMPO_CACHE_DIR", "XDG_CACHE_HOME"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, str(tmp_path / value))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    expected = tmp_path / ("tc" if "TEMPO_CACHE_DIR" in env else "xdg/tempo" if env else "home/.cache/tempo")
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["paths.output_dir=unused"])
    assert Path(cfg.paths.cache_dir) == default_cache_dir() == expected
    assert SyntheticVideos().root.parent == expected / "synthetic"
    assert FrameManifest(tmp_path / "data").cache_dir == expected / "manifests"


# -- only real video is accepted ---------------------------------------------------------------
README = "# tempo\n\nA config-driven training framework for video action recognition.\n\n" + "- a line\n" * 60


def not_videos(root: Path) -> dict[str, Path]:
    """A README renamed as a list entry would name it, and a still image renamed .mp4."""
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    files = {name: root / name for name in ("readme.txt", "readme.mp4", "frame.mp4")}
    files["readme.txt"].write_text(README)
    files["readme.mp4"].write_text(README)
    Image.fromarray(moving_bar(1)[0]).save(files["frame.mp4"], format="PNG")
    return files


@pytest.mark.parametrize("opener", ["pyav", "decord", "open_video"])
@pytest.mark.parametrize("name", ["readme.txt", "readme.mp4", "frame.mp4"])
def test_text_or_image_is_not_a_video(tmp_path, name, opener):
    """FFmpeg's tty demuxer draws a .txt file as a 640x400 video, an image opens as a 1-frame one:
    every source refuses both, naming the file and what to do."""
    from tempo.data.sources import open_video

    path = not_videos(tmp_path)[name]
    with pytest.raises(DecodeError) as err:
        source = open_video(path) if opener == "open_video" else open_source(path, opener)
        source.read([0])
    message = str(err.value)
    assert str(path) in message
    if name == "readme.txt":
        assert "not a video" in message and "text drawn into pictures (tty demuxer, ansi codec)" in message
        assert "remove it from the list" in message
    if name == "frame.mp4":
        assert "not a video: a single png image" in message and "dataset.backend=frames" in message


def test_dataset_reports_the_text_file_and_keeps_going(tmp_path, caplog):
    """Per-sample fault reporting names the text file; evaluation marks its sample invalid."""
    import logging

    from tempo.data.dataset import VideoDataset
    from tempo.data.records import VideoRecord
    from tempo.data.samplers import SegmentSampler

    text = not_videos(tmp_path)["readme.txt"]
    video = write_video(tmp_path / "ok.mp4", moving_bar(), gop=4)
    records = [VideoRecord(str(text), 0), VideoRecord(str(video), 1)]
    for backend in ("pyav", "decord"):
        dataset = VideoDataset(records, SegmentSampler(num_segments=4), backend=backend)
        with caplog.at_level(logging.WARNING, logger="tempo.data.dataset"):
            sample = dataset[0]
        assert not sample["valid"] and sample["failures"] == 1
        assert dataset[1]["valid"]
        assert f"skipping undecodable video: cannot read {text}: not a video" in caplog.text
        caplog.clear()
