"""Reference-aware sparse decoding equals a full decode, on every container/codec we can encode."""

from pathlib import Path

import av
import numpy as np
import pytest

from tempo.data.encode import write_video
from tempo.data.sources import DecodeError, PyAVSource, open_source
from tempo.data.sparse_decode import build_index, h264_droppable, hevc_droppable, nal_units

N = 48
X264_LONG_GOP = {"x264-params": "bframes=3:b-pyramid=normal:b-adapt=2:scenecut=0"}


def moving_texture(n=N, h=48, w=64, seed=1):
    """Smoothly moving texture plus a sweeping bar: the encoder uses B-frames and references."""
    base = np.random.default_rng(seed).integers(0, 255, (h + 64, w + 64, 3), dtype=np.uint8)
    base = (base.astype(np.float32) * 0.3 + 90).astype(np.uint8)
    for t in range(n):
        frame = np.roll(base, (t, 2 * t), (0, 1))[:h, :w].copy()
        frame[(3 * t) % h: (3 * t) % h + 4] = 250
        yield frame


VIDEOS = {
    # name: (file name, write_video kwargs)
    "mp4_h264_bpyramid": ("a.mp4", {"gop": 250, "options_extra": X264_LONG_GOP}),
    "mkv_h264": ("b.mkv", {"gop": 250, "options_extra": X264_LONG_GOP}),
    "ts_h264_annexb": ("c.ts", {"codec": "libx264", "gop": 250, "options_extra": X264_LONG_GOP}),
    "mp4_h264_short_gop": ("d.mp4", {"gop": 12, "options_extra": X264_LONG_GOP}),
    "mp4_hevc": ("e.mp4", {"codec": "libx265", "gop": 250, "options_extra": {"x265-params": "log-level=none"}}),
    "webm_vp8": ("f.webm", {"gop": 250}),
    "webm_vp9": ("g.webm", {"codec": "libvpx-vp9", "gop": 250}),
    "avi_mpeg4": ("h.avi", {"gop": 250}),
    "mp4_odd_size": ("i.mp4", {"gop": 250, "options_extra": X264_LONG_GOP, "size": (38, 54)}),
    "mp4_vfr": ("j.mp4", {"gop": 250, "options_extra": X264_LONG_GOP, "vfr": True}),
}


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("sparse")
    out = {}
    for name, (file, kwargs) in VIDEOS.items():
        kwargs = dict(kwargs)
        h, w = kwargs.pop("size", (48, 64))
        if kwargs.pop("vfr", False):  # irregular gaps between frames
            kwargs["pts"] = np.cumsum(np.random.default_rng(0).integers(1, 4, N)).tolist()
        if "libx265" in kwargs.get("codec", "") and "libx265" not in av.codecs_available:
            continue
        out[name] = write_video(root / file, moving_texture(h=h, w=w), fps=25, **kwargs)
    return out


def full_decode(path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


TARGET_SETS = [
    [0], [N - 1], [5, 17, 30, 44], [44, 3, 3, 30, 0],  # unsorted, repeated
    sorted(np.random.default_rng(2).choice(N, 8, replace=False).tolist()), list(range(N)),
]


@pytest.mark.parametrize("name", list(VIDEOS))
def test_sparse_equals_full_decode(videos, name):
    if name not in videos:
        pytest.skip("encoder not available")
    full = full_decode(videos[name])
    source = PyAVSource(videos[name])
    assert source.num_frames == len(full) == N
    for targets in TARGET_SETS:
        np.testing.assert_array_equal(source.read(targets).numpy(), full[targets], err_msg=f"{name} {targets}")


def test_h264_long_gop_skips_non_reference_frames(videos):
    """The B-pyramid stream has droppable packets, and a sparse read sends fewer packets."""
    with av.open(str(videos["mp4_h264_bpyramid"])) as container:
        index = build_index(container, container.streams.video[0])
    assert index.keyframe.sum() == 1  # one GOP: long-GOP as in the wild
    assert 0 < index.droppable.sum() < N // 2
    assert not index.droppable[index.keyframe].any()
    # the Annex-B stream (start codes) finds the same non-reference pictures
    with av.open(str(videos["ts_h264_annexb"])) as container:
        annexb = build_index(container, container.streams.video[0])
    assert annexb.droppable.sum() == index.droppable.sum()


def test_decoder_receives_only_needed_packets(videos, monkeypatch):
    from tempo.data.sparse_decode import PacketIndex

    source = PyAVSource(videos["mp4_h264_bpyramid"])
    fed = []
    original = PacketIndex.packet

    def spy(self, j, read=None):  # records each packet handed to the decoder
        fed.append(j)
        return original(self, j, read)

    monkeypatch.setattr(PacketIndex, "packet", spy)
    targets = [10, 20]
    out = source.read(targets)
    np.testing.assert_array_equal(out.numpy(), full_decode(videos["mp4_h264_bpyramid"])[targets])
    index = source._index
    target_packets = {int(index.frame_packet[t]) for t in targets}
    assert fed == sorted(fed)  # one forward pass
    assert all(not index.droppable[j] or j in target_packets for j in fed)
    assert max(fed) == max(target_packets)  # nothing decoded past the last target's packet
    assert len(fed) < max(target_packets) + 1  # some non-reference packets were skipped


def test_nal_parsing():
    # AVCC: 4-byte lengths; an SEI (type 6) plus a non-reference slice (ref_idc 0, type 1)
    avcc = b"\x00\x00\x00\x02\x06\x05" + b"\x00\x00\x00\x03\x01\xaa\xbb"
    assert [n[0] for n in nal_units(avcc, 4)] == [0x06, 0x01]
    assert h264_droppable(avcc, 4)
    assert not h264_droppable(b"\x00\x00\x00\x02\x21\xaa", 4)  # ref_idc 1
    assert not h264_droppable(b"\x00\x00\x00\x02\x67\xaa" + b"\x00\x00\x00\x02\x01\xaa", 4)  # SPS inside
    annexb = b"\x00\x00\x00\x01\x09\xf0\x00\x00\x01\x01\xaa\xbb"
    assert [n[0] for n in nal_units(annexb, None)] == [0x09, 0x01]
    assert h264_droppable(annexb, None)
    # HEVC: TRAIL_N (0) droppable only at the top temporal layer; TRAIL_R (1) never
    assert hevc_droppable([(0, 0)], 0) and not hevc_droppable([(0, 0)], 1) and not hevc_droppable([(1, 0)], 0)


def _corrupt_packet(path: Path) -> Path:
    """Overwrite the middle of a reference P-frame's packet with junk; returns the damaged copy."""
    with av.open(str(path)) as container:
        index = build_index(container, container.streams.video[0])
    candidates = [j for j in range(len(index.packets)) if not index.keyframe[j] and not index.droppable[j]]
    packet = index.packets[candidates[len(candidates) // 2]]
    data = bytearray(path.read_bytes())
    start = packet.pos + 8
    data[start: packet.pos + packet.size] = np.random.default_rng(0).integers(
        0, 256, packet.pos + packet.size - start, dtype=np.uint8).tobytes()
    broken = path.with_name("broken" + path.suffix)
    broken.write_bytes(bytes(data))
    return broken


def test_corrupt_packet_raises_decode_error(videos):
    broken = _corrupt_packet(videos["mp4_h264_bpyramid"])
    source = PyAVSource(broken)
    with pytest.raises(DecodeError, match="broken.mp4"):
        source.read([N - 1])


def test_open_source_backends(videos):
    path = videos["mp4_h264_bpyramid"]
    assert isinstance(open_source(path), PyAVSource)  # the sparse decoder is the default
    assert isinstance(open_source(path, "pyav"), PyAVSource)
    decord = pytest.importorskip("decord")
    del decord
    from tempo.data.sources import DecordSource

    assert isinstance(open_source(path, "decord"), DecordSource)
    with pytest.raises(ValueError, match="unknown video backend"):
        open_source(path, "ffmpeg")


def test_sequential_fallback_equals(videos):
    path = videos["mp4_h264_bpyramid"]
    np.testing.assert_array_equal(PyAVSource(path, sparse=False).read([7, 2]).numpy(), full_decode(path)[[7, 2]])
