"""`PyAVSource`: exact, reference-aware sparse decoding of one video file with PyAV."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from tempo.data.frame_source import DecodeError, FrameSource, check_file, check_indices, first_video_stream
from tempo.data.stream_checks import UnknownOrder, warn_decode_order


class PyAVSource(FrameSource):
    """PyAV decoding, reference-aware and sparse (`tempo.data.sparse_decode`) by default.

    Opening builds the packet index (no decoding) — or loads it from `index_dir`
    (`tempo.data.packet_store`), where it is stored the first time; `read` sends the decoder only the
    keyframes, reference frames and targets the requested frames need, in one forward pass. Frames
    equal a full decode exactly. H.264/HEVC/VP8/VP9 packets in MP4/MKV/WebM are read straight from
    the file (no demuxer, nothing held in memory); other files keep their container open and the
    demuxed packets in memory while the source is open. A stream whose timestamps cannot order its
    frames (`tempo.data.stream_checks`: MPEG-4 part 2 with B-frames in AVI, missing or duplicate pts,
    ...) is read in decoder output order, the kept packets decoded from the first up to the last
    requested frame, with one warning naming the file; so is a stream on which the decoder contradicts
    the timestamps during a sparse read. `sparse=False` decodes sequentially too. Only video is
    accepted: text and still images that FFmpeg opens as video raise `NotAVideo`. Decoding is
    single-threaded per source (`threads`): DataLoader workers are the parallelism, and frame
    threading would delay output.
    """

    def __init__(self, path: str | Path, sparse: bool = True, threads: int = 1, index_dir: str | None = None):
        self.path = str(path)
        self.threads = threads
        check_file(self.path)
        self._index = self._file = self._ctx = self._container = None
        self._packets = None  # decode-order packets of a stream read in decoder output order
        self._closed = False
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
        except DecodeError:
            self.close()
            raise
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
            stream = first_video_stream(self.path, container)
            if sparse:
                try:
                    index = build_index(container, stream, self.path)
                    if not index.raw:
                        self._container, container = container, None
                    return index, index.num_frames
                except UnknownOrder as err:  # decoder output order: keep the packets for sequential reads
                    warn_decode_order(self.path, str(err))
                    self._packets, self._container, container = err.packets, container, None
                    return None, stream.frames or len(self._packets)
            # the container's frame count, else one packet per frame (no decoding)
            return None, stream.frames or sum(1 for p in container.demux(stream) if p.size)
        finally:
            if container is not None:
                container.close()

    def close(self) -> None:
        self._release()
        self._closed = True

    def _release(self) -> None:
        """Let go of the file, the container and the packets held for reading."""
        if getattr(self, "_file", None) is not None:
            self._file.close()
            self._file = None
        if getattr(self, "_container", None) is not None:
            self._container.close()
            self._container = None
        self._ctx = self._packets = None
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

        idx = check_indices(self.path, indices, self.num_frames)
        wanted = sorted(set(idx))
        try:
            if self._closed:
                raise ValueError("source was closed")
            if self._index is not None:
                got = self._read_sparse(wanted)
            elif self._packets is not None:
                got = self._read_kept_packets(wanted)
            else:
                got = self._read_sequential(wanted)
        except (av.FFmpegError, ValueError, OSError) as err:
            raise DecodeError(self.path, f"PyAV failed to decode ({err})") from err
        missing = set(wanted) - got.keys()
        if missing:
            raise DecodeError(self.path, f"video ended before frame {min(missing)} (truncated file?)")
        return torch.from_numpy(np.stack([got[i] for i in idx]))

    def _read_sparse(self, wanted: list[int]) -> dict[int, np.ndarray]:
        """The sparse read; where the decoder contradicts the timestamps (stamps out of order, promised
        frames not output) and a sequential decode finds every frame, the decoder's output order wins
        from then on."""
        from tempo.data.sparse_decode import decode_frames

        try:
            if self._file is not None:
                got = decode_frames(self._decoder(), self._index, wanted, self._read_bytes)
            else:
                got = decode_frames(self._decoder(self._container.streams.video[0].codec_context), self._index, wanted)
            if len(got) == len(wanted):
                return got
            problem = "the decoder did not output every frame its timestamps promise"
        except UnknownOrder as err:
            problem = str(err)
        got = self._read_sequential(wanted)
        if len(got) == len(wanted):
            warn_decode_order(self.path, problem)
            self._release()
            self._index = None
        return got

    def _read_kept_packets(self, wanted: list[int]) -> dict[int, np.ndarray]:
        """Frames in decoder output order, the demuxed packets sent from the first one on."""
        ctx = self._decoder(self._container.streams.video[0].codec_context)
        try:
            return self._collect((f for p in [*self._packets, None] for f in ctx.decode(p)), wanted)
        finally:
            ctx.flush_buffers()

    def _read_sequential(self, wanted: list[int]) -> dict[int, np.ndarray]:
        import av

        with av.open(self.path) as container:
            stream = container.streams.video[0]
            self._decoder(stream.codec_context)
            return self._collect(container.decode(stream), wanted)

    @staticmethod
    def _collect(frames, wanted: list[int]) -> dict[int, np.ndarray]:
        """The `wanted` frames (sorted) of `frames`, counted in the order the decoder outputs them."""
        from tempo.data.sparse_decode import to_rgb

        targets, last, got = set(wanted), wanted[-1], {}
        for i, frame in enumerate(frames):
            if frame.is_corrupt:
                raise ValueError(f"decoder flagged frame {i} corrupt")
            if i in targets:
                got[i] = to_rgb(frame)
            if i >= last:
                break
        return got
