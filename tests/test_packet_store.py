"""Stored packet indices: a second open reads no container, frames stay exact, stale indices are rebuilt."""

import os

import av
import numpy as np
import pytest

from tempo.data.encode import write_packed_bframes_avi, write_video
from tempo.data.packet_store import PacketIndexStore
from tempo.data.sources import DecodeError, PyAVSource, open_source
from tests.conftest import compose_config

N = 40
LONG_GOP = {"x264-params": "bframes=3:b-pyramid=normal:b-adapt=2:scenecut=0"}
TARGETS = [[0], [N - 1], [3, 17, 29, 38], [30, 2, 2, 11]]


def frames(seed=1, n=N, h=48, w=64):
    base = np.random.default_rng(seed).integers(0, 255, (h + 64, w + 64, 3), dtype=np.uint8)
    for t in range(n):
        frame = np.roll(base, (t, 2 * t), (0, 1))[:h, :w].copy()
        frame[(3 * t) % h: (3 * t) % h + 4] = 250
        yield frame


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    return {
        "mp4": write_video(root / "a.mp4", frames(), fps=25, gop=250, options_extra=LONG_GOP),
        "mkv": write_video(root / "b.mkv", frames(), fps=25, gop=250, options_extra=LONG_GOP),
        "webm": write_video(root / "c.webm", frames(), fps=25, gop=250),
        "intra": write_video(root / "d.mp4", frames(), fps=25, gop=1),
        "ts": write_video(root / "e.ts", frames(), fps=25, codec="libx264", gop=250, options_extra=LONG_GOP),
        "avi": write_packed_bframes_avi(root / "f.avi", frames(), gop=250),  # as UCF-101 and HMDB-51 come
    }


def full_decode(path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def no_container(monkeypatch):
    """From here on any av.open fails: a read must come from the stored index and the file alone."""
    def refuse(*args, **kwargs):
        raise AssertionError("av.open called although the packet index is stored")

    monkeypatch.setattr(av, "open", refuse)


@pytest.mark.parametrize("name", ["mp4", "mkv", "webm", "intra"])
def test_stored_index_reads_exact_frames_without_a_container(videos, name, tmp_path, monkeypatch):
    path, full = videos[name], full_decode(videos[name])
    first = PyAVSource(path, index_dir=tmp_path)
    assert first._index.raw and first._index.packets is None  # nothing held in memory
    assert PacketIndexStore(tmp_path).file_for(str(path)).is_file()
    no_container(monkeypatch)
    second = PyAVSource(path, index_dir=tmp_path)
    assert second.num_frames == N
    for targets in TARGETS:
        np.testing.assert_array_equal(second.read(targets).numpy(), full[targets], err_msg=f"{name} {targets}")
    np.testing.assert_array_equal(second._index.droppable, first._index.droppable)
    np.testing.assert_array_equal(second._index.pts, first._index.pts)


@pytest.mark.parametrize("name", ["ts", "avi"])
def test_containers_that_cannot_be_read_raw_are_not_stored(videos, name, tmp_path):
    """MPEG-TS packets are reassembled from 188-byte cells, MPEG-4 part 2 needs its container's
    parameters (and in AVI with B-frames is read in decoder order): both keep demuxing, and stay exact."""
    source = PyAVSource(videos[name], index_dir=tmp_path)
    assert source._index is None if name == "avi" else not source._index.raw
    assert not PacketIndexStore(tmp_path).file_for(str(videos[name])).exists()
    np.testing.assert_array_equal(source.read([5, 33]).numpy(), full_decode(videos[name])[[5, 33]])


def test_changed_video_is_indexed_again(videos, tmp_path):
    path = tmp_path / "v.mp4"
    write_video(path, frames(seed=1), fps=25, gop=250, options_extra=LONG_GOP)
    PyAVSource(path, index_dir=tmp_path / "idx").read([1])
    write_video(path, frames(seed=2, n=N + 6), fps=25, gop=8, options_extra=LONG_GOP)  # same name, new video
    os.utime(path, ns=(1, 1))  # a different mtime even on coarse-clock file systems
    source = PyAVSource(path, index_dir=tmp_path / "idx")
    assert source.num_frames == N + 6
    np.testing.assert_array_equal(source.read([4, N + 5]).numpy(), full_decode(path)[[4, N + 5]])


def test_damaged_or_foreign_index_file_is_ignored(videos, tmp_path):
    path, store = videos["mp4"], PacketIndexStore(tmp_path)
    store.file_for(str(path)).parent.mkdir(parents=True)
    store.file_for(str(path)).write_bytes(b"not an index")
    assert store.load(str(path)) is None
    source = PyAVSource(path, index_dir=tmp_path)
    np.testing.assert_array_equal(source.read([7]).numpy(), full_decode(path)[[7]])
    assert store.load(str(path)) is not None  # rewritten
    whole = store.file_for(str(path)).read_bytes()
    store.file_for(str(path)).write_bytes(whole[: len(whole) - 2 * 33])  # two records short
    assert store.load(str(path)) is None


def test_unwritable_store_only_costs_speed(videos, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the store's folder should be")
    source = PyAVSource(videos["mp4"], index_dir=blocker / "idx")
    np.testing.assert_array_equal(source.read([9]).numpy(), full_decode(videos["mp4"])[[9]])
    assert list(tmp_path.iterdir()) == [blocker]


def test_corrupt_packet_with_stored_index_names_the_file(videos, tmp_path):
    path = tmp_path / "clip.mp4"
    path.write_bytes(videos["mp4"].read_bytes())
    source = PyAVSource(path, index_dir=tmp_path / "idx")
    index = source._index
    references = [k for k in range(len(index.pos)) if not index.keyframe[k] and not index.droppable[k]]
    j = references[len(references) // 2]
    stat = os.stat(path)
    with open(path, "r+b") as file:  # same size and mtime: the stored index still applies
        file.seek(int(index.pos[j]) + 8)
        file.write(np.random.default_rng(0).integers(0, 256, int(index.size[j]) - 8, dtype=np.uint8).tobytes())
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.raises(DecodeError, match="clip.mp4"):
        PyAVSource(path, index_dir=tmp_path / "idx").read([N - 1])


def test_truncated_after_indexing_gives_decode_error(videos, tmp_path):
    path = tmp_path / "clip.mp4"
    path.write_bytes(videos["mp4"].read_bytes())
    source = PyAVSource(path, index_dir=tmp_path / "idx")
    os.truncate(path, int(source._index.pos[N // 2]))  # the open source's file loses its tail
    with pytest.raises(DecodeError, match="clip.mp4"):
        source.read([N - 1])


def test_open_source_passes_each_backend_its_own_options(videos, tmp_path):
    kwargs = {"index_dir": str(tmp_path), "template": "{:05d}.jpg", "start_index": 1, "num_threads": 1}
    source = open_source(videos["mp4"], "pyav", **kwargs)
    assert isinstance(source, PyAVSource) and source._index.raw
    assert PacketIndexStore(tmp_path).load(str(videos["mp4"])) is not None


@pytest.mark.parametrize("dataset", ["k400", "sthv2", "ucf101", "hmdb51", "diving48", "sthv1", "list", "synthetic"])
def test_dataset_configs_store_indices_in_the_cache(dataset, tmp_path):
    cfg = compose_config([f"dataset={dataset}"], tmp_path / "run", tmp_path / "cache")
    assert cfg.dataset.datamodule.source_kwargs.index_dir == str(tmp_path / "cache" / "packet_index")
    if dataset != "synthetic":
        off = compose_config([f"dataset={dataset}", "dataset.packet_index_dir=null"], tmp_path / "run",
                             tmp_path / "cache")
        assert off.dataset.datamodule.source_kwargs.index_dir is None


def test_no_index_dir_stores_nothing(videos, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source = open_source(videos["mp4"], "pyav", index_dir=None)
    assert source._index.raw and list(tmp_path.iterdir()) == []


def test_prepare_check_stores_the_index_training_reads(videos, tmp_path, monkeypatch):
    from tempo.data.records import VideoRecord
    from tempo.data.video_checks import check_record

    check = check_record(VideoRecord(str(videos["mp4"]), 0), "pyav", {"index_dir": str(tmp_path)})
    assert check.status == "ok" and check.num_frames == N
    no_container(monkeypatch)  # training's first epoch opens it from the stored index
    source = open_source(videos["mp4"], "pyav", index_dir=str(tmp_path))
    assert source.num_frames == N and source._index.raw


@pytest.mark.parametrize("name", ["mp4", "ts"])
def test_closed_source_says_so(videos, name, tmp_path):
    source = PyAVSource(videos[name], index_dir=tmp_path)
    source.close()
    with pytest.raises(DecodeError, match="closed"):
        source.read([1])
