"""Reference-aware sparse decoding with PyAV: decode only what the requested frames need.

A clip of 8 frames sampled over a 300-frame long-GOP video does not need every frame decoded:
it needs the keyframe, the *reference* frames between it and each target, and the targets.
H.264 marks a picture that nothing references with `nal_ref_idc == 0` in each NAL header, HEVC
with a `_N` NAL type; such packets are never sent to the decoder unless they are targets.
Dropping them cannot change any other frame (nothing predicts from them), so the frames kept
are bit-exact equal to a full decode. Other codecs (VP8/VP9, MPEG-4 part 2, ...) decode every
packet from the keyframe on, still skipping whole GOPs that hold no target.

The packet index (decode order, byte offset, size, pts, keyframe flag, droppable flag) is demuxed
once without decoding, and can be stored (`tempo.data.packet_store`): with a stored index, an
H.264/HEVC/VP8/VP9 stream in MP4, MKV or WebM is read as just the needed packets' bytes from the
file, with no demuxer. Frame `i` is the i-th frame in presentation order (sorted pts), as a full
decode yields it; a stream whose timestamps cannot give that order (`tempo.data.stream_checks`)
raises `UnknownOrder` here (as does a read whose decoder outputs stamps out of order), and its
source decodes sequentially in decoder output order. Reads are one forward pass over the targets'
packets, jumping to a later keyframe (and resetting the decoder) only when the next target lies
past it.
"""

from __future__ import annotations

import mmap
import os
import threading
from dataclasses import dataclass

import numpy as np

from tempo.data.stream_checks import NO_TIMESTAMP, UnknownOrder, packet_stamps

# H.264 NAL types: 1 non-IDR slice, 2-4 slice data partitions, 5 IDR slice; 6 SEI, 9 access unit
# delimiter, 12 filler: a packet of only these, with every slice nal_ref_idc == 0, is droppable.
H264_SLICES = {1, 2, 3, 4}
H264_HARMLESS = {6, 9, 12}
# HEVC VCL NAL types below 16 with an even number are sub-layer non-reference pictures; 35 AUD,
# 38 filler, 39/40 SEI are harmless beside them.
HEVC_HARMLESS = {35, 38, 39, 40}


# Codecs whose decoder needs nothing but the codec name, its extradata and the packets (no other
# container parameters); their packets can be read straight from the file by a stored index.
RAW_CODECS = {"h264", "hevc", "vp8", "vp9"}  # MPEG-4 part 2 needs its container's parameters


@dataclass
class PacketIndex:
    """The video stream's packets in decode order (no packet data), and where each frame lives.

    `raw` says that packet j's bytes are exactly `file[pos[j]: pos[j] + size[j]]` (MP4, MKV, WebM;
    checked when the index is built) and the codec needs no container parameters, so a stored
    index decodes with no demuxer at all; otherwise (MPEG-TS, MPEG-4 part 2 in AVI, ...) the
    packets stay in memory as `packets` while the source is open.
    """

    codec: str
    extradata: bytes
    pos: np.ndarray        # (P,) int64 byte offset of each packet in the file
    size: np.ndarray       # (P,) int64
    pts: np.ndarray        # (P,) int64
    dts: np.ndarray        # (P,) int64, NO_TIMESTAMP where unknown
    keyframe: np.ndarray   # (P,) bool
    droppable: np.ndarray  # (P,) bool: non-reference, may be skipped unless a target
    raw: bool = False
    packets: list | None = None  # av.Packet in decode order, when not `raw` (or still at hand)

    def __post_init__(self):
        order = np.argsort(self.pts, kind="stable")
        self.frame_packet = order            # (F,) decode position of presentation-order frame i
        self.frame_pts = self.pts[order]     # (F,) its pts

    @property
    def num_frames(self) -> int:
        return len(self.frame_pts)

    def start_of(self, position: int) -> int:
        """Decode position of the keyframe to start from for the packet at `position`: the last
        keyframe at or before it, one further back for a leading picture (presented before its
        keyframe, so it may predict from the previous GOP)."""
        keys = np.flatnonzero(self.keyframe[: position + 1])
        if len(keys) == 0:
            return 0
        k = len(keys) - 1
        while k > 0 and self.pts[position] < self.pts[keys[k]]:
            k -= 1
        return int(keys[k])

    def packet(self, j: int, read=None):
        """Packet j as an `av.Packet`: the one in memory, else its bytes from `read(pos, size)`."""
        import av

        if self.packets is not None:
            return self.packets[j]
        packet = av.Packet(read(int(self.pos[j]), int(self.size[j])))
        packet.pts = int(self.pts[j])
        if self.dts[j] != NO_TIMESTAMP:
            packet.dts = int(self.dts[j])
        packet.is_keyframe = bool(self.keyframe[j])
        return packet


_reformatters = threading.local()
_inherited: list = []


def _fresh_reformatters() -> None:
    """In a forked loader worker: new swscale contexts. Using the parent's hangs the child (seen with
    num_workers=2 after the parent had decoded in-process), and so does freeing them: they are kept."""
    global _reformatters
    _inherited.append(_reformatters)
    _reformatters = threading.local()


os.register_at_fork(after_in_child=_fresh_reformatters)


def to_rgb(frame, width: int | None = None, height: int | None = None) -> np.ndarray:
    """A decoded frame as RGB uint8 (H, W, 3), optionally resized. One swscale context is kept per
    thread: `VideoFrame.to_ndarray` sets a new one up for every frame, ~8x the conversion itself."""
    from av.video.reformatter import VideoReformatter

    if not hasattr(_reformatters, "rgb"):
        _reformatters.rgb = VideoReformatter()
    return _reformatters.rgb.reformat(frame, width, height, format="rgb24").to_ndarray()


# -- NAL parsing ---------------------------------------------------------------------------------
def nal_units(data: bytes, length_size: int | None):
    """The NAL units of one packet: AVCC/hvcC length-prefixed (`length_size` bytes), else Annex-B
    start codes."""
    if length_size:
        pos, end = 0, len(data)
        while pos + length_size <= end:
            size = int.from_bytes(data[pos: pos + length_size], "big")
            pos += length_size
            if size <= 0 or pos + size > end:
                return  # malformed: stop (caller treats an empty/odd packet as not droppable)
            yield data[pos: pos + size]
            pos += size
        return
    starts = []
    i = data.find(b"\x00\x00\x01")
    while i >= 0:
        starts.append(i + 3)
        i = data.find(b"\x00\x00\x01", i + 3)
    for n, s in enumerate(starts):
        e = starts[n + 1] - 3 if n + 1 < len(starts) else len(data)
        yield data[s:e].rstrip(b"\x00") if n + 1 < len(starts) else data[s:e]


def h264_droppable(data: bytes, length_size: int | None) -> bool:
    """True when the access unit is a non-reference picture (every slice nal_ref_idc == 0) and
    carries nothing else that later pictures need (SPS/PPS, IDR, ...)."""
    slices = 0
    for nal in nal_units(data, length_size):
        if not nal:
            continue
        kind, ref_idc = nal[0] & 0x1F, (nal[0] >> 5) & 0x3
        if kind in H264_SLICES:
            if ref_idc != 0:
                return False
            slices += 1
        elif kind not in H264_HARMLESS:
            return False
    return slices > 0


def hevc_nal_kinds(data: bytes, length_size: int | None) -> list[tuple[int, int]]:
    """(nal_unit_type, temporal_id) of each NAL unit."""
    return [((nal[0] >> 1) & 0x3F, (nal[1] & 0x7) - 1) for nal in nal_units(data, length_size) if len(nal) >= 2]


def hevc_droppable(kinds: list[tuple[int, int]], max_temporal_id: int) -> bool:
    """A sub-layer non-reference picture (even VCL type < 16) of the highest temporal layer: no
    picture of its own or a lower layer predicts from it, and there is no higher layer."""
    vcl = [(k, t) for k, t in kinds if k < 32]
    if not vcl or any(k not in HEVC_HARMLESS for k, _ in kinds if k >= 32):
        return False
    return all(k < 16 and k % 2 == 0 and t == max_temporal_id for k, t in vcl)


def length_size(codec: str, extradata: bytes | None) -> int | None:
    """NAL length-prefix size from avcC/hvcC extradata; None for Annex-B (start codes)."""
    if not extradata or extradata[0] != 1:
        return None
    if codec == "h264" and len(extradata) > 4:
        return (extradata[4] & 0x3) + 1
    if codec == "hevc" and len(extradata) > 21:
        return (extradata[21] & 0x3) + 1
    return None


# -- index -----------------------------------------------------------------------------------------
def build_index(container, stream, path: str | None = None) -> PacketIndex:
    """Demux (no decoding) every packet of `stream`; flag keyframes and droppable packets. With the
    file's `path`, also check whether each packet's bytes lie as-is in the file (`raw`)."""
    packets = [p for p in container.demux(stream) if p.size and not p.is_discard]
    data = [bytes(p) for p in packets]
    codec = stream.codec_context.name
    prefix = length_size(codec, bytes(stream.codec_context.extradata or b""))
    if codec == "h264":
        droppable = [not p.is_keyframe and h264_droppable(d, prefix) for p, d in zip(packets, data, strict=True)]
    elif codec == "hevc":
        kinds = [hevc_nal_kinds(d, prefix) for d in data]
        top = max((t for ks in kinds for _, t in ks), default=0)
        droppable = [not p.is_keyframe and hevc_droppable(ks, top) for p, ks in zip(packets, kinds, strict=True)]
    else:
        droppable = [False] * len(packets)
    keyframe = np.array([p.is_keyframe for p in packets], bool)
    if len(packets) and not keyframe[0]:
        keyframe[0] = True  # a stream starts decodable (or not at all) at its first packet
    pts, dts = packet_stamps(container, stream, packets)  # UnknownOrder where they cannot order frames
    pos = np.array([p.pos if p.pos is not None else -1 for p in packets], np.int64)
    index = PacketIndex(
        codec, bytes(stream.codec_context.extradata or b""), pos, np.array([len(d) for d in data], np.int64), pts,
        dts, keyframe, np.array(droppable, bool), packets=packets)
    if path is not None and codec in RAW_CODECS:
        index.raw = locate_in_file(path, index.pos, data)
    return index


def locate_in_file(path: str, pos: np.ndarray, data: list[bytes], slack: int = 64) -> bool:
    """Point `pos` at each packet's bytes as they lie in the file, at or just after the offset the
    demuxer reports (MP4: the sample itself; MKV/WebM: its block header). False when a packet is
    not found unchanged (MPEG-TS reassembles packets from 188-byte cells; laced or compressed MKV
    blocks): such a file keeps being demuxed."""
    if len(data) == 0 or (pos < 0).any():
        return False
    with open(path, "rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as whole:
        found = [whole.find(d, p, p + len(d) + slack) for p, d in zip(pos.tolist(), data, strict=True)]
    if min(found) < 0:
        return False
    pos[:] = found
    return True


def decode_frames(ctx, index: PacketIndex, targets: list[int], read=None) -> dict[int, np.ndarray]:
    """frame index → RGB uint8 (H, W, 3) for the distinct sorted `targets`, by one forward pass of
    the decoder `ctx` (packets from memory, else `read(pos, size)` of the file)."""
    by_pts = {int(index.frame_pts[t]): t for t in targets}
    target_packets = {int(index.frame_packet[t]) for t in targets}
    got: dict[int, np.ndarray] = {}
    shown = [NO_TIMESTAMP]  # pts of the decoder's last output since it was reset

    def take(frames) -> None:
        for frame in frames:
            if frame.is_corrupt:
                raise ValueError(f"decoder flagged frame pts={frame.pts} corrupt")
            # the decoder outputs presentation order; stamps that go back show they are not it
            if frame.pts is None:
                raise UnknownOrder("the decoder output a frame without a timestamp")
            if frame.pts <= shown[0]:
                raise UnknownOrder(f"the decoder output a frame stamped {frame.pts} after one stamped {shown[0]}")
            shown[0] = frame.pts
            t = by_pts.get(frame.pts)
            if t is not None and t not in got:
                got[t] = to_rgb(frame)

    position = None  # next packet to send
    for last in sorted(target_packets):
        if last < (position or 0):
            continue  # already sent (a target's packet came earlier in decode order)
        start = index.start_of(last)
        if position is None or start > position:  # the target lies past the next keyframe: jump
            if position is not None:
                take(ctx.decode(None))
                ctx.flush_buffers()
                shown[0] = NO_TIMESTAMP
            position = start
        for j in range(position, last + 1):
            if j in target_packets or not index.droppable[j]:
                take(ctx.decode(index.packet(j, read)))
        position = last + 1
    take(ctx.decode(None))
    ctx.flush_buffers()
    return got
