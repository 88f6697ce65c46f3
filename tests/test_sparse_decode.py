"""Reference-aware sparse decoding equals a full decode, on every container/codec pair the tests make
(B-frames on where the codec has them) and every way their timestamps go wrong (`tests.video_files`)."""

from pathlib import Path

import av
import numpy as np
import pytest

from tempo.data.sources import DecodeError, PyAVSource, open_source
from tempo.data.sparse_decode import build_index, h264_droppable, hevc_droppable, nal_units
from tests.video_files import DECODE_ORDER, VIDEOS, N, full_decode


@pytest.fixture(scope="module")
def videos(test_videos):
    return test_videos


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
    assert (source._index is None) == (name in DECODE_ORDER)  # sparse wherever the timestamps order frames
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
