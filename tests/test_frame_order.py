"""Every source returns what a full decode returns, in presentation order, whatever the timestamps say.

The files (`tests.video_files`): MPEG-4 part 2 in AVI with packed B-frames (as UCF-101 and HMDB-51
ship), H.264 with B-frames in AVI, a raw H.264 stream (no pts), pts copied from dts, duplicate pts,
VFR, and the well-stamped containers beside them.
"""

import logging

import numpy as np
import pytest

from tempo.data import stream_checks
from tempo.data.dataset import VideoDataset
from tempo.data.packet_store import PacketIndexStore
from tempo.data.records import VideoRecord
from tempo.data.samplers import SegmentSampler
from tempo.data.sources import DecodeError, DecordSource, PyAVSource, open_source, open_video
from tests.video_files import VIDEOS, N, full_decode

SOURCES = {
    "pyav": lambda path, tmp: PyAVSource(path),
    "pyav_index": lambda path, tmp: PyAVSource(path, index_dir=tmp / "index"),
    "decord": lambda path, tmp: DecordSource(path),
    "open_video": lambda path, tmp: open_video(path),
}


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch):
    monkeypatch.setattr(stream_checks, "_warned", set())


def random_reads(count=20, size=8, seed=0):
    rng = np.random.default_rng(seed)
    return [sorted(rng.choice(N, size, replace=False).tolist()) for _ in range(count)]


@pytest.mark.parametrize("source", list(SOURCES))
@pytest.mark.parametrize("name", list(VIDEOS))
def test_every_source_equals_the_full_decode(test_videos, name, source, tmp_path):
    """All frames in one read, then 20 random 8-frame reads on fresh sources and on one kept open."""
    if name not in test_videos:
        pytest.skip("encoder not available")
    path, full = test_videos[name], full_decode(test_videos[name])
    make = SOURCES[source]
    kept = make(path, tmp_path)
    assert kept.num_frames == len(full) == N
    np.testing.assert_array_equal(kept.read(range(N)).numpy(), full, err_msg=f"{name} {source} all frames")
    for targets in random_reads():
        np.testing.assert_array_equal(make(path, tmp_path).read(targets).numpy(), full[targets],
                                      err_msg=f"{name} {source} {targets}")
        np.testing.assert_array_equal(kept.read(targets).numpy(), full[targets], err_msg=f"{name} {source} kept")


def test_packed_bframes_are_in_motion_order(test_videos):
    """The reference itself is right: the decoder's order is the encoded one (the frames move
    smoothly), while ordering by the guessed pts swaps neighbours."""
    packed, plain = full_decode(test_videos["avi_mpeg4_packed_bframes"]), full_decode(test_videos["mp4_mpeg4_bframes"])
    np.testing.assert_array_equal(packed, plain)  # same encoder settings, same pictures
    import av

    with av.open(str(test_videos["avi_mpeg4_packed_bframes"])) as container:
        stamps = [f.pts for f in container.decode(video=0)]
    assert stamps != sorted(stamps)  # what ordering by timestamps got wrong


def test_decode_order_is_said_once_naming_the_file(test_videos, caplog):
    path = test_videos["avi_mpeg4_packed_bframes"]
    with caplog.at_level(logging.WARNING, logger="tempo.data.stream_checks"):
        for _ in range(3):
            open_source(path).read([5, 6])
            open_source(path, "decord").read([5])
        PyAVSource(test_videos["mp4_h264_bpyramid"]).read([5])
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert str(path) in message and "avi container stores no presentation timestamps" in message
    assert "decoder outputs" in message


@pytest.mark.parametrize("name", ["avi_mpeg4_packed_bframes", "mkv_h264_pts_copied_from_dts"])
def test_decoder_contradicting_the_stamps_wins(test_videos, name, monkeypatch, caplog):
    """With the container rules off, the sparse read sees the decoder put out stamps that go back, or
    not the frames they promise, and reads in the decoder's order from then on."""
    monkeypatch.setattr(stream_checks, "order_problem", lambda *args: None)
    path, full = test_videos[name], full_decode(test_videos[name])
    source = PyAVSource(path)
    assert source._index is not None
    with caplog.at_level(logging.WARNING, logger="tempo.data.stream_checks"):
        np.testing.assert_array_equal(source.read(range(N)).numpy(), full)
    assert source._index is None
    assert str(path) in caplog.text and "decoder" in caplog.text
    np.testing.assert_array_equal(source.read([7, 30]).numpy(), full[[7, 30]])


def test_untrusted_order_is_never_stored(test_videos, tmp_path):
    """H.264 in MKV is read raw with a stored index, but not when its pts were copied from dts."""
    store = PacketIndexStore(tmp_path)
    for name, stored in [("mkv_h264", True), ("mkv_h264_pts_copied_from_dts", False)]:
        source = PyAVSource(test_videos[name], index_dir=tmp_path)
        assert store.file_for(str(test_videos[name])).exists() == stored
        np.testing.assert_array_equal(source.read([9, 3]).numpy(), full_decode(test_videos[name])[[9, 3]])


@pytest.mark.parametrize("backend", ["pyav", "decord"])
def test_video_dataset_samples_presentation_order(test_videos, backend, tmp_path):
    """As training reads: sampled clips of a packed B-frame AVI hold the full decode's frames."""
    path = test_videos["avi_mpeg4_packed_bframes"]
    full = full_decode(path)
    sampler = SegmentSampler(num_segments=8)
    dataset = VideoDataset([VideoRecord(str(path), 0)], sampler, backend=backend,
                           source_kwargs={"index_dir": str(tmp_path / "index")})
    video = dataset[0]["video"].permute(1, 2, 3, 0).numpy()  # (T, H, W, C)
    np.testing.assert_array_equal(video, full[sampler.sample(N)[0]])
    rng = np.random.default_rng(3)
    for _ in range(5):
        clip = dataset.load(0, rng)["video"].permute(1, 2, 3, 0).numpy()
        matches = [next(i for i in range(N) if np.array_equal(frame, full[i])) for frame in clip]
        assert matches == sorted(matches) and len(set(matches)) == 8  # in order, one frame per segment


def test_decode_order_warnings_stop_after_a_few_files(test_videos, tmp_path, monkeypatch, caplog):
    """A dataset of such files (UCF-101: 13,320) names the first few, then goes quiet."""
    import shutil

    monkeypatch.setattr(stream_checks, "WARNED_FILES", 2)
    copies = [shutil.copy(test_videos["avi_mpeg4_packed_bframes"], tmp_path / f"v{i}.avi") for i in range(3)]
    with caplog.at_level(logging.WARNING, logger="tempo.data.stream_checks"):
        for path in copies:
            PyAVSource(path).read([1])
    assert [str(copies[0]) in r.getMessage() for r in caplog.records] == [True, False]
    assert str(copies[1]) in caplog.records[1].getMessage() and "debug level" in caplog.records[1].getMessage()


def test_closed_decode_order_source_says_so(test_videos):
    source = PyAVSource(test_videos["avi_mpeg4_packed_bframes"])
    source.read([3])
    source.close()
    with pytest.raises(DecodeError, match="closed"):
        source.read([3])
