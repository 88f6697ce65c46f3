"""Stored packet indices: open a video without demuxing it again.

Building a `PacketIndex` demuxes every packet of the file (and reads its NAL headers); at 8 frames
per clip that is a sizeable share of a read of short-GOP or all-intra video, and it is paid again
every epoch. `PacketIndexStore` keeps each raw-readable index (see `PacketIndex.raw`) in one small
file under a cache folder (`${paths.cache_dir}/packet_index` in the dataset configs), keyed by the
video's real path and checked against its size and modification time, so later epochs (and later
runs) read the index in one go and the packets straight from the video file.

File layout: a magic line, one JSON line (codec, extradata, the video's size and mtime), then one
packed array of per-packet records. Writes are atomic (temp file + rename): DataLoader workers may
store the same video at once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from tempo.data.sparse_decode import PacketIndex

log = logging.getLogger(__name__)

MAGIC = b"tempo-packet-index 2\n"  # 2: only streams whose timestamps order their frames (stream_checks)
RECORD = np.dtype([("pos", "<i8"), ("size", "<i8"), ("pts", "<i8"), ("dts", "<i8"), ("flags", "u1")])
KEYFRAME, DROPPABLE = 1, 2


def encode(index: PacketIndex, size: int, mtime_ns: int) -> bytes:
    header = {"codec": index.codec, "extradata": index.extradata.hex(), "size": size, "mtime_ns": mtime_ns,
              "packets": len(index.pos)}
    records = np.empty(len(index.pos), RECORD)
    records["pos"], records["size"], records["pts"], records["dts"] = index.pos, index.size, index.pts, index.dts
    records["flags"] = index.keyframe * KEYFRAME + index.droppable * DROPPABLE
    return MAGIC + json.dumps(header).encode() + b"\n" + records.tobytes()


def decode(blob: bytes, size: int, mtime_ns: int) -> PacketIndex | None:
    """The stored index, or None when it is not one or describes another version of the file."""
    if not blob.startswith(MAGIC):
        return None
    end = blob.index(b"\n", len(MAGIC))
    header = json.loads(blob[len(MAGIC): end])
    if header["size"] != size or header["mtime_ns"] != mtime_ns:
        return None
    records = np.frombuffer(blob[end + 1:], RECORD)
    if len(records) != header["packets"]:
        return None  # cut short
    return PacketIndex(header["codec"], bytes.fromhex(header["extradata"]), records["pos"].copy(),
                       records["size"].copy(), records["pts"].copy(), records["dts"].copy(),
                       (records["flags"] & KEYFRAME) > 0, (records["flags"] & DROPPABLE) > 0, raw=True)


class PacketIndexStore:
    """Packet indices of raw-readable videos, one file each under `folder`."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)

    def file_for(self, path: str) -> Path:
        key = hashlib.sha1(os.path.realpath(path).encode()).hexdigest()
        return self.folder / key[:2] / f"{key}.idx"

    def load(self, path: str) -> PacketIndex | None:
        """The stored index of `path`, or None (never stored, stale, unreadable)."""
        try:
            stat = os.stat(path)
            blob = self.file_for(path).read_bytes()
            return decode(blob, stat.st_size, stat.st_mtime_ns)
        except (OSError, ValueError, KeyError):
            return None

    def save(self, path: str, index: PacketIndex) -> None:
        """Store a raw-readable index; a read-only or full cache folder only costs speed."""
        if not index.raw:
            return
        target, partial = self.file_for(path), None
        try:
            stat = os.stat(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=target.parent, delete=False, suffix=".tmp") as tmp:
                partial = tmp.name
                tmp.write(encode(index, stat.st_size, stat.st_mtime_ns))
            os.replace(partial, target)
        except OSError as err:
            log.debug("could not store the packet index of %s in %s: %s", path, self.folder, err)
            if partial is not None:
                Path(partial).unlink(missing_ok=True)
