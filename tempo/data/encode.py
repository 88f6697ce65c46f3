"""Writing videos with PyAV (synthetic data, test fixtures, `tempo.prepare` re-encoding).

`write_packed_bframes_avi` writes MPEG-4 part 2 in AVI with B-frames the way DivX 5 / Xvid stored them
(UCF-101's and HMDB-51's originals): a "packed bitstream" where each anchor's chunk also carries the
first B-VOP after it, every later B-VOP moves one chunk earlier, and a not-coded VOP (N-VOP) fills the
last chunk of the group. The AVI demuxer guesses pts 1, 3, 2, 4, ... for such a stream; the decoder
shows the pictures in another order, so the guessed stamps sit on the wrong pictures (tests and
benchmarks of `tempo.data.stream_checks` use it).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

VOP_START = b"\x00\x00\x01\xb6"
ENCODER_USER_DATA = re.compile(rb"\x00\x00\x01\xb2Lavc[^\x00]*")
DIVX_PACKED_USER_DATA = b"\x00\x00\x01\xb2DivX503b1393p"  # the "p": packed bitstream (FFmpeg's decode_user_data)
# container suffix -> (codec, pixel format); all widely decodable by decord and FFmpeg.
CODECS = {".mp4": "libx264", ".webm": "libvpx", ".avi": "mpeg4", ".mkv": "libx264"}


def write_video(
    path: str | Path,
    frames: Iterable[np.ndarray],
    fps: int = 12,
    codec: str | None = None,
    gop: int | None = None,
    quality: int = 18,
    preset: str = "veryfast",
    options_extra: dict[str, str] | None = None,
    pts: Iterable[int] | None = None,
    container_format: str | None = None,
) -> Path:
    """Encode RGB uint8 frames (H, W, 3) to `path`; codec chosen by suffix unless given.

    H and W must be even (yuv420p). `gop` sets the keyframe interval (short GOPs make
    random access fast). `preset` is x264's, `options_extra` extra encoder options (e.g.
    `{"x264-params": "bframes=3:b-pyramid=normal"}`); `pts` gives each frame's timestamp
    in units of 1/`fps` s (variable frame rate; default 0, 1, 2, ...). `container_format`
    overrides the one the suffix implies (FFmpeg readers probe the content, not the name).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    codec = codec or CODECS.get(path.suffix.lower(), "libx264")
    frames = iter(frames)
    first = next(frames)
    h, w = first.shape[:2]
    with av.open(str(path), "w", format=container_format) as container:
        stream = container.add_stream(codec, rate=fps)
        if pts is not None:
            stream.time_base = Fraction(1, fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.codec_context.thread_count = 1  # multi-threaded encoders are not bit-reproducible
        options = {}
        if codec == "libx264":
            options["crf"] = str(quality)
            options["preset"] = preset
        elif codec == "libvpx":
            options.update({"crf": str(max(quality, 4)), "b": "1M"})
        else:
            stream.bit_rate = 2_000_000
        if gop:
            options["g"] = str(gop)
            stream.gop_size = gop
        options.update(options_extra or {})
        stream.options = options
        stamps = iter(pts) if pts is not None else None
        for frame in _chain(first, frames):
            video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            if stamps is not None:
                video_frame.pts, video_frame.time_base = next(stamps), Fraction(1, fps)
            for packet in stream.encode(video_frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _chain(first, rest):
    yield first
    yield from rest


def _vop_type(data: bytes) -> int:
    """0 I, 1 P, 2 B, 3 S (the first VOP of a packet)."""
    return data[data.index(VOP_START) + 4] >> 6


def _not_coded_vop(time_bits: int) -> bytes:
    """A P-VOP header with vop_coded = 0 (an N-VOP), stuffed to a byte boundary."""
    bits = "01" + "0" + "1" + "0" * time_bits + "1" + "0"  # type P, modulo_time_base, marker, time, marker, coded
    bits += "0" + "1" * ((-len(bits) - 1) % 8)
    return VOP_START + int(bits, 2).to_bytes(len(bits) // 8, "big")


def write_packed_bframes_avi(path: str | Path, frames, fps: int = 25, b_frames: int = 2, **kwargs) -> Path:
    """MPEG-4 part 2 with `b_frames` B-frames per anchor in AVI, as a DivX/Xvid packed bitstream."""
    path = Path(path)
    plain = write_video(path.with_name(path.stem + "_unpacked.avi"), frames, fps=fps, codec="mpeg4",
                        options_extra={"bf": str(b_frames)}, **kwargs)
    with av.open(str(plain)) as container:
        stream = container.streams.video[0]
        extradata = bytes(stream.codec_context.extradata or b"")
        packets = [bytes(p) for p in container.demux(stream) if p.size]
    groups: list[list[bytes]] = []  # an anchor (I/P) and the B-VOPs after it, in decode order
    for data in packets:
        if _vop_type(data) == 2:
            groups[-1].append(data)
        else:
            groups.append([data])
    chunks = []
    for anchor, *bs in groups:
        chunks += [anchor] if not bs else [anchor + bs[0], *bs[1:], _not_coded_vop((fps - 1).bit_length())]

    def divx(data: bytes) -> bytes:
        return ENCODER_USER_DATA.sub(DIVX_PACKED_USER_DATA, data)

    with av.open(str(plain)) as container, av.open(str(path), "w") as out:
        stream = out.add_stream_from_template(container.streams.video[0])
        stream.codec_context.extradata = divx(extradata)
        for i, chunk in enumerate(chunks):
            packet = av.Packet(divx(chunk))
            packet.pts = packet.dts = i
            packet.time_base, packet.stream, packet.is_keyframe = stream.time_base, stream, _vop_type(chunk) == 0
            out.mux(packet)
    plain.unlink()
    return path
