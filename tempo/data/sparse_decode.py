"""Reference-aware sparse decoding with PyAV: decode only what the requested frames need.

A clip of 8 frames sampled over a 300-frame long-GOP video does not need every frame decoded:
it needs the keyframe, the *reference* frames between it and each target, and the targets.
H.264 marks a picture that nothing references with `nal_ref_idc == 0` in each NAL header, HEVC
with a `_N` NAL type; such packets are never sent to the decoder unless they are targets.
Dropping them cannot change any other frame (nothing predicts from them), so the frames kept
are bit-exact equal to a full decode. Other codecs (VP8/VP9, MPEG-4 part 2, ...) decode every
packet from the keyframe on, still skipping whole GOPs that hold no target.

The packet index (decode order, pts, keyframe flag, droppable flag) is demuxed once per source
without decoding; frame `i` is the i-th frame in presentation order (sorted pts), as a full
decode yields it. Reads are one forward pass over the targets' packets, jumping to a later
keyframe (and resetting the decoder) only when the next target lies past it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# H.264 NAL types: 1 non-IDR slice, 2-4 slice data partitions, 5 IDR slice; 6 SEI, 9 access unit
# delimiter, 12 filler: a packet of only these, with every slice nal_ref_idc == 0, is droppable.
H264_SLICES = {1, 2, 3, 4}
H264_HARMLESS = {6, 9, 12}
# HEVC VCL NAL types below 16 with an even number are sub-layer non-reference pictures; 35 AUD,
# 38 filler, 39/40 SEI are harmless beside them.
HEVC_HARMLESS = {35, 38, 39, 40}


@dataclass
class PacketIndex:
    """The video stream's packets in decode order, and where each frame lives."""

    packets: list            # av.Packet, decode order
    keyframe: np.ndarray      # (P,) bool
    droppable: np.ndarray     # (P,) bool: non-reference, may be skipped unless a target
    frame_packet: np.ndarray  # (F,) decode position of presentation-order frame i
    frame_pts: np.ndarray     # (F,) its pts

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
        pts = self.packets[position].pts
        while k > 0 and pts < self.packets[keys[k]].pts:
            k -= 1
        return int(keys[k])


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
def build_index(container, stream) -> PacketIndex:
    """Demux (no decoding) every packet of `stream`; flag keyframes and droppable packets."""
    packets = [p for p in container.demux(stream) if p.size and not p.is_discard]
    codec = stream.codec_context.name
    prefix = length_size(codec, bytes(stream.codec_context.extradata or b""))
    if codec == "h264":
        droppable = [not p.is_keyframe and h264_droppable(bytes(p), prefix) for p in packets]
    elif codec == "hevc":
        kinds = [hevc_nal_kinds(bytes(p), prefix) for p in packets]
        top = max((t for ks in kinds for _, t in ks), default=0)
        droppable = [not p.is_keyframe and hevc_droppable(ks, top) for p, ks in zip(packets, kinds, strict=True)]
    else:
        droppable = [False] * len(packets)
    keyframe = np.array([p.is_keyframe for p in packets], bool)
    if len(packets) and not keyframe[0]:
        keyframe[0] = True  # a stream starts decodable (or not at all) at its first packet
    pts = np.array([p.pts if p.pts is not None else -1 for p in packets], np.int64)
    if len(pts) and (pts < 0).any():
        raise ValueError("packets without timestamps")
    order = np.argsort(pts, kind="stable")
    return PacketIndex(packets, keyframe, np.array(droppable, bool), order, pts[order])


def decode_frames(stream, index: PacketIndex, targets: list[int]) -> dict[int, np.ndarray]:
    """frame index → RGB uint8 (H, W, 3) for the distinct sorted `targets`, by one forward pass."""
    ctx = stream.codec_context
    by_pts = {int(index.frame_pts[t]): t for t in targets}
    target_packets = {int(index.frame_packet[t]) for t in targets}
    got: dict[int, np.ndarray] = {}

    def take(frames) -> None:
        for frame in frames:
            if frame.is_corrupt:
                raise ValueError(f"decoder flagged frame pts={frame.pts} corrupt")
            t = by_pts.get(frame.pts)
            if t is not None and t not in got:
                got[t] = frame.to_ndarray(format="rgb24")

    position = None  # next packet to send
    for last in sorted(target_packets):
        if last < (position or 0):
            continue  # already sent (a target's packet came earlier in decode order)
        start = index.start_of(last)
        if position is None or start > position:  # the target lies past the next keyframe: jump
            if position is not None:
                take(ctx.decode(None))
                ctx.flush_buffers()
            position = start
        for j in range(position, last + 1):
            if j in target_packets or not index.droppable[j]:
                take(ctx.decode(index.packets[j]))
        position = last + 1
    take(ctx.decode(None))
    ctx.flush_buffers()
    return got
