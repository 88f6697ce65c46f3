"""The stored formats `tempo.prepare format=<name>` writes, what each was measured to cost and keep,
and the PSNR of a prepared video against its source.

Every format is H.264 in MP4 whatever the file's suffix (the same relative paths keep the annotations
valid; FFmpeg, decord and PyAV probe the content): MP4 carries B-frame timestamps, AVI does not.
`tune=fastdecode` drops CABAC and deblocking (decoding is faster, for some 10 % more bits). With the
sparse decoder (`tempo.data.sparse_decode`) a clip's target frame costs its keyframe, the reference
frames between them and itself: all-intra costs one (large) frame, `gop=4` P-only one to four small
ones, `sparse_b*` its two anchors and itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

H264_MP4 = {"codec": "libx264", "container_format": "mp4"}
FAST_DECODE = {"tune": "fastdecode"}
P_ONLY = {**FAST_DECODE, "x264-params": "bframes=0:scenecut=0"}  # I P P P | I P P P ...


def _sparse_b(anchors_every: int) -> dict:
    """I anchors every `anchors_every` frames with non-reference B-frames between them."""
    params = f"bframes={anchors_every - 1}:b-adapt=0:b-pyramid=none:scenecut=0:ref=1"
    return {**FAST_DECODE, "x264-params": params}


# name -> `tempo.data.encode.write_video` settings (keyframe interval, x264 crf, encoder options)
FORMATS: dict[str, dict] = {
    # the pre-existing `gop=16` re-encode (x264 defaults otherwise: b-pyramid, 3 B-frames)
    "gop16": {"gop": 16, **H264_MP4},
    # all-intra: every frame a keyframe, a clip decodes exactly its 8 frames
    "intra": {"gop": 1, "quality": 23, "options_extra": FAST_DECODE, **H264_MP4},
    "intra_crf18": {"gop": 1, "quality": 18, "options_extra": FAST_DECODE, **H264_MP4},
    "sparse_b16": {"gop": 16, "quality": 23, "options_extra": _sparse_b(16), **H264_MP4},
    "sparse_b8_crf20": {"gop": 8, "quality": 20, "options_extra": _sparse_b(8), **H264_MP4},
    # short P-only GOPs: a target costs 2.5 (gop 4) or 1.5 (gop 2) small frames on average
    "p2_crf20": {"gop": 2, "quality": 20, "options_extra": P_ONLY, **H264_MP4},
    "p4_crf20": {"gop": 4, "quality": 20, "options_extra": P_ONLY, **H264_MP4},
    "p4_crf22": {"gop": 4, "quality": 22, "options_extra": P_ONLY, **H264_MP4},
}
FAST_SHORT_SIDE = 256


@dataclass(frozen=True)
class Measured:
    """One format as benchmarks/bench_pipeline.py measured it: clips/s against decord on the
    ORIGINAL files (the whole train pipeline), disk size against the originals, PSNR (dB) against
    the original frames."""

    speed: float
    disk: float
    psnr: float

    def __str__(self) -> str:
        return f"{self.speed:.1f}x decord's clips/s, {self.disk:.2f}x disk, {self.psnr:.1f} dB"


# Measured on this project's 2-core CPU machine (shared; ratios within one run):
#   calibrated: `python benchmarks/bench_pipeline.py` (3 Kinetics-like clips, 340x256x300)
#   real:       `python benchmarks/bench_pipeline.py --videos-from /path/to/clips` (MMAction2's demo
#               and test clips: two Kinetics-style H.264 mp4s and one MPEG-4 avi)
# Full table and frontier: docs/datasets-formats.md.
MEASURED: dict[str, dict[str, Measured]] = {
    name: {"calibrated": Measured(*calibrated), "real": Measured(*real)}
    for name, calibrated, real in [
        ("gop16", (2.0, 1.81, 34.8), (2.3, 1.18, 39.0)),
        ("intra", (24.8, 1.78, 26.7), (31.9, 1.51, 33.3)),
        ("intra_crf18", (31.2, 3.27, 30.0), (20.9, 2.37, 36.2)),
        ("sparse_b16", (15.0, 1.57, 29.2), (11.6, 0.88, 34.7)),
        ("sparse_b8_crf20", (12.5, 2.05, 32.1), (9.8, 1.26, 36.9)),
        ("p2_crf20", (36.1, 3.45, 34.5), (15.6, 2.04, 38.5)),
        ("p4_crf20", (15.9, 2.51, 33.7), (14.3, 1.54, 38.1)),
        ("p4_crf22", (17.6, 2.11, 32.2), (12.6, 1.25, 36.9)),
    ]
}

# what `format=fast` writes: the goal is >= 10x decord on the originals at <= 2x their disk and
# >= 36 dB (issue 24); the reason for the choice is in docs/datasets-formats.md
FAST_FORMAT = "p4_crf20"


def promised_psnr(name: str) -> float:
    """The PSNR floor (dB) a format promises on Kinetics-like content: the lower of its measured
    figures, less 1.5 dB for the spread between clips (a 12-frame calibrated clip measures up to
    0.7 dB below the 300-frame ones)."""
    return min(m.psnr for m in MEASURED[name].values()) - 1.5


def describe(name: str) -> str:
    """The format's settings and measured figures, for the console."""
    measured = "; ".join(f"{kind} clips: {m}" for kind, m in MEASURED.get(name, {}).items())
    return f"{name} = {FORMATS[name]}" + (f" (measured: {measured})" if measured else "")


def psnr(mse: float) -> float:
    """PSNR (dB) of 8-bit frames from their mean squared error."""
    return float(10 * np.log10(255 ** 2 / max(mse, 1e-12)))


def source_frames(path: str, ids, height: int, width: int) -> np.ndarray:
    """Frames `ids` (presentation order) of a source video, decoded with PyAV and resized to
    (height, width) as the converter resizes them: what a prepared video's frames should be."""
    import av

    from tempo.data.sparse_decode import to_rgb

    wanted, frames = set(ids), {}
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in wanted:
                frames[i] = to_rgb(frame, width, height)
    missing = wanted - set(frames)
    if missing:
        raise ValueError(f"{path} has no frame {min(missing)}")
    return np.stack([frames[i] for i in ids])


def squared_error(path: str, frames: np.ndarray, ids) -> float:
    """Mean squared error of prepared `frames` (N, H, W, 3) uint8 against frames `ids` of the source."""
    reference = source_frames(path, ids, *frames.shape[1:3]).astype(np.float64)
    return float(np.mean((reference - frames.astype(np.float64)) ** 2))
