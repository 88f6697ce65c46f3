"""Where frames come from: one video file or frame folder → uint8 (T, H, W, 3).

Opening is lazy (metadata only); `read(indices)` decodes just the requested frames.
Every failure is raised as `DecodeError` naming the file, so the dataset can report
and skip it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class DecodeError(RuntimeError):
    """A video or frame folder could not be read; the message names the path."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"cannot read {path}: {reason}")
        self.path = path
        self.reason = reason


class FrameSource:
    """Interface: `num_frames` and `read(indices) -> uint8 tensor (T, H, W, 3)`."""

    path: str
    num_frames: int

    def read(self, indices) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError


def _check_file(path: str) -> None:
    if not os.path.exists(path):
        raise DecodeError(path, "file does not exist (wrong `dataset.root`? run `python -m tempo.prepare`)")
    if os.path.getsize(path) == 0:
        raise DecodeError(path, "file is empty (0 bytes); re-download or remove it from the annotations")


def _check_indices(path: str, indices, num_frames: int) -> list[int]:
    idx = [int(i) for i in np.asarray(indices).reshape(-1)]
    if num_frames <= 0:
        raise DecodeError(path, "video has no decodable frames")
    bad = [i for i in idx if not 0 <= i < num_frames]
    if bad:
        raise DecodeError(path, f"frame index {bad[0]} outside the {num_frames} frames the video has")
    return idx


class DecordSource(FrameSource):
    """decord VideoReader: fast seeking, decodes only requested frames."""

    def __init__(self, path: str | Path, num_threads: int = 1):
        import decord

        self.path = str(path)
        _check_file(self.path)
        try:
            self._reader = decord.VideoReader(self.path, num_threads=num_threads)
            self.num_frames = len(self._reader)
        except Exception as err:  # decord raises its own DECORDError / RuntimeError
            raise DecodeError(self.path, f"decord could not open it ({err.__class__.__name__}: {err})") from err

    def read(self, indices) -> torch.Tensor:
        idx = _check_indices(self.path, indices, self.num_frames)
        try:
            return torch.from_numpy(self._reader.get_batch(idx).asnumpy())
        except Exception as err:
            # decord has frame-size and codec bugs FFmpeg itself does not; PyAV decodes those
            log.warning("decord failed on %s (%s); decoding with PyAV instead", self.path,
                        str(err).splitlines()[-1][:200])
            try:
                return PyAVSource(self.path).read(idx)
            except DecodeError as fallback:
                raise DecodeError(self.path, f"decord failed ({err}); PyAV too ({fallback.reason})") from err


class PyAVSource(FrameSource):
    """PyAV decoding, reference-aware and sparse (`tempo.data.sparse_decode`) by default.

    Opening builds the packet index (no decoding) — or loads it from `index_dir`
    (`tempo.data.packet_store`), where it is stored the first time; `read` sends the decoder only the
    keyframes, reference frames and targets the requested frames need, in one forward pass. Frames
    equal a full decode exactly. H.264/HEVC/VP8/VP9 packets in MP4/MKV/WebM are read straight from
    the file (no demuxer, nothing held in memory); other files keep their container open and the
    demuxed packets in memory while the source is open. `sparse=False` (or a stream without
    timestamps) decodes sequentially from the first frame up to the last requested one. Decoding is
    single-threaded per source (`threads`): DataLoader workers are the parallelism, and frame
    threading would delay output.
    """

    def __init__(self, path: str | Path, sparse: bool = True, threads: int = 1, index_dir: str | None = None):
        self.path = str(path)
        self.threads = threads
        _check_file(self.path)
        self._index = self._file = self._ctx = self._container = None
        try:
            store = None
            if sparse and index_dir:
                from tempo.data.packet_store import PacketIndexStore

                store = PacketIndexStore(index_dir)
                self._index = store.load(self.path)
            if self._index is None:
                self._index, self.num_frames = self._scan(sparse)
                if store is not None and self._index is not None:
                    store.save(self.path, self._index)
            else:
                self.num_frames = self._index.num_frames
            if self._index is not None and self._index.raw:
                self._index.packets = None  # read from the file from now on
                self._file = open(self.path, "rb", buffering=0)  # noqa: SIM115 - closed in close()
        except Exception as err:
            self.close()
            raise DecodeError(self.path, f"PyAV could not open it ({err.__class__.__name__}: {err})") from err

    def _scan(self, sparse: bool):
        """(packet index or None, frame count) from one demux of the file, no decoding. An index
        that is not raw-readable keeps the container open (`_container`): its packets are decoded
        with the container's parameters."""
        import av

        from tempo.data.sparse_decode import build_index

        container = av.open(self.path)
        try:
            if not container.streams.video:
                raise ValueError("no video stream")
            stream = container.streams.video[0]
            if sparse:
                try:
                    index = build_index(container, stream, self.path)
                    if not index.raw:
                        self._container, container = container, None
                    return index, index.num_frames
                except ValueError:  # no timestamps (raw elementary stream): decode sequentially
                    container.seek(0)
            # the container's frame count, else one packet per frame (no decoding)
            return None, stream.frames or sum(1 for p in container.demux(stream) if p.size)
        finally:
            if container is not None:
                container.close()

    def close(self) -> None:
        if getattr(self, "_file", None) is not None:
            self._file.close()
            self._file = None
        if getattr(self, "_container", None) is not None:
            self._container.close()
            self._container = None
        self._ctx = None
        if getattr(self, "_index", None) is not None:
            self._index.packets = None

    def __del__(self):
        self.close()

    def _decoder(self, ctx=None):
        """A codec context set up for exact, reported decoding (`ctx`, else one for the index)."""
        import av

        if ctx is None:
            if self._ctx is not None:
                return self._ctx
            ctx = av.CodecContext.create(self._index.codec, "r")
            if self._index.extradata:
                ctx.extradata = self._index.extradata
            self._ctx = ctx
        if not ctx.is_open:
            ctx.thread_type = av.codec.context.ThreadType.SLICE  # never FRAME: output stays in order
            ctx.thread_count = self.threads
            # report bitstream errors instead of concealing them into a wrong frame
            ctx.options = {"err_detect": "crccheck+bitstream+buffer+explode"}
        return ctx

    def _read_bytes(self, pos: int, size: int) -> bytes:
        data = os.pread(self._file.fileno(), size, pos)
        if len(data) != size:
            raise ValueError(f"file ends inside the packet at byte {pos} (truncated or changed?)")
        return data

    def read(self, indices) -> torch.Tensor:
        import av

        idx = _check_indices(self.path, indices, self.num_frames)
        wanted = sorted(set(idx))
        try:
            if self._index is not None:
                got = self._read_sparse(wanted)
            else:
                with av.open(self.path) as container:
                    stream = container.streams.video[0]
                    self._decoder(stream.codec_context)
                    got = self._decode_sequential(container, stream, wanted)
        except (av.FFmpegError, ValueError, OSError) as err:
            raise DecodeError(self.path, f"PyAV failed to decode ({err})") from err
        missing = set(wanted) - got.keys()
        if missing:
            raise DecodeError(self.path, f"video ended before frame {min(missing)} (truncated file?)")
        return torch.from_numpy(np.stack([got[i] for i in idx]))

    def _read_sparse(self, wanted: list[int]) -> dict[int, np.ndarray]:
        from tempo.data.sparse_decode import decode_frames

        if self._file is not None:
            return decode_frames(self._decoder(), self._index, wanted, self._read_bytes)
        if self._container is None:
            raise ValueError("source was closed")
        return decode_frames(self._decoder(self._container.streams.video[0].codec_context), self._index, wanted)

    @staticmethod
    def _decode_sequential(container, stream, wanted: list[int]) -> dict[int, np.ndarray]:
        from tempo.data.sparse_decode import to_rgb

        targets, last, got = set(wanted), wanted[-1], {}
        for i, frame in enumerate(container.decode(stream)):
            if frame.is_corrupt:
                raise ValueError(f"decoder flagged frame {i} corrupt")
            if i in targets:
                got[i] = to_rgb(frame)
            if i >= last:
                break
        return got


class FrameFolderSource(FrameSource):
    """A folder of JPEG/PNG frames named by a template (`{:05d}.jpg`, start 1 for SSv1)."""

    def __init__(self, path: str | Path, template: str = "{:05d}.jpg", start_index: int = 1,
                 num_frames: int | None = None):
        self.path = str(path)
        self.template = template
        self.start_index = start_index
        if not os.path.isdir(self.path):
            raise DecodeError(self.path, "frame folder does not exist (wrong `dataset.root`?)")
        if num_frames is None:
            num_frames = sum(1 for n in os.listdir(self.path) if n.lower().endswith(IMAGE_SUFFIXES))
        self.num_frames = num_frames

    def read(self, indices) -> torch.Tensor:
        idx = _check_indices(self.path, indices, self.num_frames)
        return torch.from_numpy(np.stack([self._load(i) for i in idx]))

    def _load(self, i: int) -> np.ndarray:
        from PIL import Image

        file = os.path.join(self.path, self.template.format(i + self.start_index))
        try:
            with Image.open(file) as img:
                return np.asarray(img.convert("RGB"))
        except (OSError, ValueError) as err:
            raise DecodeError(file, f"image could not be read ({err})") from err


def open_video(path: str | Path, num_threads: int = 1) -> FrameSource:
    """The one decord → PyAV fallback: decord, else PyAV when decord is not installed, cannot open the
    file or finds no frames in it. A missing or empty file raises at once; when both fail the
    `DecodeError` names the path and both reasons."""
    path = str(path)
    _check_file(path)
    try:
        source = DecordSource(path, num_threads=num_threads)
    except ImportError:
        return PyAVSource(path)
    except DecodeError as err:
        decord_reason = err.reason
    else:
        if source.num_frames > 0:
            return source
        decord_reason = "decord found no frames"
    try:
        return PyAVSource(path)
    except DecodeError as err:
        raise DecodeError(path, f"{decord_reason}; {err.reason}") from None


def open_source(path: str | Path, backend: str = "pyav", **kwargs) -> FrameSource:
    """Open a video with `backend`: "pyav" (default: reference-aware sparse decoding, exact),
    "decord" (decord's `get_batch`, falling back to PyAV via `open_video`) or "frames" (JPEG/PNG
    folders). `kwargs` may hold options of every backend (`dataset.source_kwargs`); each takes its own."""
    options = {"frames": ("template", "start_index", "num_frames"), "pyav": ("sparse", "threads", "index_dir"),
               "decord": ("num_threads",)}
    if backend not in options:
        raise ValueError(f"unknown video backend {backend!r}; choose pyav, decord or frames")
    kwargs = {k: v for k, v in kwargs.items() if k in options[backend]}
    if backend == "frames":
        return FrameFolderSource(path, **kwargs)
    if backend == "pyav":
        return PyAVSource(path, **kwargs)
    return open_video(path, **kwargs)
