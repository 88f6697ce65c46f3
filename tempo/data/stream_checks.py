"""What is accepted as video, and when a container's timestamps give the frames' order.

`not_video` rejects what FFmpeg opens but is no video: text rendered as pictures (the `tty`
demuxer makes any `.txt` file a 640×400 "video"; ANSI art, BinText, XBin, iCE Draw) and single images
(the image-sequence and `*_pipe` demuxers).

`order_problem` says why a stream's packet timestamps cannot be trusted to put its frames in
presentation order (frame i = the i-th smallest pts, what the sparse decoder relies on):
- a packet has no timestamp, or two share one;
- the container stores none and the demuxer guessed them (AVI, raw elementary streams), while
  the stream reorders frames (B-frames). MPEG-4 part 2 in AVI with DivX/Xvid packed B-frames is
  the common case: a B-VOP rides in its anchor's packet and the decoder shows it one packet
  later, so the guessed pts (1, 3, 2, 4, ...) are attached to the wrong pictures;
- the pts rise in decode order although the stream reorders frames (a muxer copied dts into pts).
Such streams are read in the decoder's output order, which is what a full decode returns.
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)

# FFmpeg demuxers that render text as video, and codecs that draw text into pictures
TEXT_DEMUXERS = {"tty", "bin", "xbin", "adf", "idf"}
TEXT_CODECS = {"ansi", "bintext", "xbin", "idf"}
# demuxers whose packets are still images, one per file (a .jpg renamed .mp4 opens as a 1-frame video)
IMAGE_DEMUXERS = {"image2", "image2pipe"}
# demuxers of containers without presentation timestamps: their pts are the demuxer's guess
GUESSED_PTS_DEMUXERS = {"avi", "h261", "h263", "h264", "hevc", "m4v", "mpegvideo", "cavsvideo", "vc1", "vvc"}

NO_TIMESTAMP = np.iinfo(np.int64).min  # a timestamp the container did not give


class UnknownOrder(ValueError):  # noqa: N818 - reads as the condition it reports
    """The packet timestamps do not give presentation order; the reason is the message, `packets` the
    video packets demuxed (decode order, one frame each), where at hand."""

    def __init__(self, reason: str, packets: list | None = None):
        super().__init__(reason)
        self.packets = packets


def not_video(format_name: str, codec_name: str) -> str | None:
    """Why a container's first video stream is no video (None when it is one)."""
    demuxers = set(format_name.split(","))
    if demuxers & TEXT_DEMUXERS or codec_name in TEXT_CODECS:
        return (f"not a video: FFmpeg reads it as text drawn into pictures ({format_name} demuxer, {codec_name} "
                f"codec); remove it from the list or replace it with the video it stands for")
    if demuxers & IMAGE_DEMUXERS or any(d.endswith("_pipe") for d in demuxers):
        return (f"not a video: a single {codec_name} image ({format_name} demuxer); list a video file, or a "
                f"folder of frames with dataset.backend=frames")
    return None


def order_problem(format_name: str, reorders: bool, pts: np.ndarray, dts: np.ndarray) -> str | None:
    """Why the packets' pts cannot order the frames (None when they can). `pts`/`dts` are in decode
    order, `NO_TIMESTAMP` where missing; `reorders`: the stream has B-frames (decoder delay)."""
    if (pts == NO_TIMESTAMP).any():
        return "some packets carry no timestamp"
    if len(np.unique(pts)) < len(pts):
        return "two packets carry the same timestamp"
    if not reorders:
        return None  # frames are shown in decode order: any increasing stamps will do
    if set(format_name.split(",")) & GUESSED_PTS_DEMUXERS:
        return f"the {format_name} container stores no presentation timestamps and the stream has B-frames"
    if len(pts) > 2 and (np.diff(pts) > 0).all():
        return "the timestamps follow decode order although the stream has B-frames (pts copied from dts?)"
    return None


def packet_stamps(container, stream, packets) -> tuple[np.ndarray, np.ndarray]:
    """(pts, dts) of the demuxed `packets` of `stream` in decode order; `UnknownOrder` when they
    cannot order the frames."""
    pts = np.array([NO_TIMESTAMP if p.pts is None else p.pts for p in packets], np.int64)
    dts = np.array([NO_TIMESTAMP if p.dts is None else p.dts for p in packets], np.int64)
    problem = order_problem(container.format.name, bool(stream.codec_context.has_b_frames), pts, dts)
    if problem:
        raise UnknownOrder(problem, packets)
    return pts, dts


WARNED_FILES = 5  # files named at warning level per process; a dataset such as UCF-101 has thousands
_warned: set[str] = set()


def warn_decode_order(path: str, reason: str) -> None:
    """Say once per file (and process) that it is read in decoder output order: as a warning for the
    first `WARNED_FILES` files, at debug level after that."""
    if path in _warned:
        return
    _warned.add(path)
    further = len(_warned) >= WARNED_FILES
    log.log(logging.DEBUG if len(_warned) > WARNED_FILES else logging.WARNING,
            "%s: %s, so its timestamps cannot order the frames; reading it in the order the decoder outputs "
            "them (what a full decode returns), from its first frame on each read%s", path, reason,
            " (further files like it are logged at debug level)" if further else "")
