"""Test videos made the ways real files come, timestamps gone wrong included, and the reference decode.

MPEG-4 part 2 in AVI with packed B-frames (UCF-101's and HMDB-51's originals) comes from
`tempo.data.encode.write_packed_bframes_avi`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import av
import numpy as np

from tempo.data.encode import write_packed_bframes_avi, write_video

N = 48
X264_BFRAMES = {"x264-params": "bframes=3:b-pyramid=normal:b-adapt=2:scenecut=0"}
def moving_texture(n: int = N, h: int = 48, w: int = 64, seed: int = 1) -> Iterator[np.ndarray]:
    """Smoothly moving texture plus a sweeping bar: the encoder uses B-frames and references."""
    base = np.random.default_rng(seed).integers(0, 255, (h + 64, w + 64, 3), dtype=np.uint8)
    base = (base.astype(np.float32) * 0.3 + 90).astype(np.uint8)
    for t in range(n):
        frame = np.roll(base, (t, 2 * t), (0, 1))[:h, :w].copy()
        frame[(3 * t) % h: (3 * t) % h + 4] = 250
        yield frame


def full_decode(path) -> np.ndarray:
    """Every frame as one decode of the whole file returns it: the reference for every source."""
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def remux(src: Path, dst: Path, stamps: Callable[[int, int | None, int | None], tuple[int | None, int | None]]) -> Path:
    """Copy `src`'s video packets into `dst` (container from its suffix) with `stamps(k, pts, dts)` as
    the k-th packet's (pts, dts): timestamps the way a careless muxer writes them."""
    with av.open(str(src)) as container, av.open(str(dst), "w") as out:
        stream = container.streams.video[0]
        target = out.add_stream_from_template(stream)
        for k, packet in enumerate(p for p in container.demux(stream) if p.size):
            packet.pts, packet.dts = stamps(k, packet.pts, packet.dts)
            packet.stream = target
            out.mux(packet)
    return dst


# Every container/codec pair the tests make, B-frames on where the codec has them, and the ways
# timestamps go wrong. name: (file name, how: write_video kwargs | ("packed", kwargs) | ("remux", source, stamps))
VIDEOS = {
    "mp4_h264_bpyramid": ("a.mp4", {"gop": 250, "options_extra": X264_BFRAMES}),
    "mkv_h264": ("b.mkv", {"gop": 250, "options_extra": X264_BFRAMES}),
    "ts_h264_annexb": ("c.ts", {"codec": "libx264", "gop": 250, "options_extra": X264_BFRAMES}),
    "mp4_h264_short_gop": ("d.mp4", {"gop": 12, "options_extra": X264_BFRAMES}),
    "mp4_hevc": ("e.mp4", {"codec": "libx265", "gop": 250, "options_extra": {"x265-params": "log-level=none"}}),
    "webm_vp8": ("f.webm", {"gop": 250}),
    "webm_vp9": ("g.webm", {"codec": "libvpx-vp9", "gop": 250}),
    "avi_mpeg4_bframes": ("h.avi", {"gop": 250, "options_extra": {"bf": "2"}}),
    "mp4_odd_size": ("i.mp4", {"gop": 250, "options_extra": X264_BFRAMES, "size": (38, 54)}),
    "mp4_vfr": ("j.mp4", {"gop": 250, "options_extra": X264_BFRAMES, "vfr": True}),
    "avi_mpeg4_no_bframes": ("k.avi", {"gop": 12}),
    "mp4_mpeg4_bframes": ("l.mp4", {"codec": "mpeg4", "gop": 250, "options_extra": {"bf": "2"}}),
    "avi_mpeg4_packed_bframes": ("m.avi", ("packed", {"gop": 250})),  # UCF-101 / HMDB-51 originals
    "avi_mpeg4_packed_short_gop": ("n.avi", ("packed", {"gop": 12})),
    "avi_h264_bframes": ("o.avi", {"codec": "libx264", "gop": 250, "options_extra": X264_BFRAMES}),
    "h264_raw_no_pts": ("p.h264", {"codec": "libx264", "gop": 250, "options_extra": X264_BFRAMES,
                                   "container_format": "h264"}),
    "mkv_h264_pts_copied_from_dts": ("q.mkv", ("remux", "mp4_h264_bpyramid", lambda k, pts, dts: (dts, dts))),
    "mkv_vp8_duplicate_pts": ("r.mkv", ("remux", "webm_vp8",  # webm ticks are ms: 40 per frame at 25 fps
                                        lambda k, pts, dts: (pts - 40 * (k % 2), dts - 40 * (k % 2)))),
}
# the ones whose timestamps cannot order the frames: read in decoder output order
DECODE_ORDER = {"avi_mpeg4_bframes", "avi_mpeg4_packed_bframes", "avi_mpeg4_packed_short_gop", "avi_h264_bframes",
                "h264_raw_no_pts", "mkv_h264_pts_copied_from_dts", "mkv_vp8_duplicate_pts"}


def make_videos(root: Path) -> dict[str, Path]:
    """`VIDEOS` written under `root` (those whose encoder is missing left out), 25 fps, N frames."""
    out: dict[str, Path] = {}
    for name, (file, how) in VIDEOS.items():
        if isinstance(how, tuple) and how[0] == "remux":
            out[name] = remux(out[how[1]], root / file, how[2])
            continue
        packed = isinstance(how, tuple)
        kwargs = dict(how[1] if packed else how)
        h, w = kwargs.pop("size", (48, 64))
        if kwargs.pop("vfr", False):  # irregular gaps between frames
            kwargs["pts"] = np.cumsum(np.random.default_rng(0).integers(1, 4, N)).tolist()
        if "libx265" in kwargs.get("codec", "") and "libx265" not in av.codecs_available:
            continue
        frames = moving_texture(h=h, w=w)
        out[name] = (write_packed_bframes_avi(root / file, frames, **kwargs) if packed
                     else write_video(root / file, frames, fps=25, **kwargs))
    return out
