"""Dense local features on disk: append-only segment files of checksummed records, read back memory-mapped.

Segment ``local/NNNNN.seg`` is a sequence of records, each::

    header  20 bytes little-endian: magic b"VPRL", key u64, payload length u32, crc32(payload) u32
    payload the keyframe's (h, w, c) local features in the map's encoding:
              float32  h*w*c float32
              float16  h*w*c float16 (default: half the disk, MNN decisions unchanged on our data)
              int8     h*w float32 per-location scales, then h*w*c int8 (x ~= q * scale; scale =
                       max|x| / 127 over the location's channels, so each location keeps its own range)

A record is written (and fdatasync'ed) before the SQLite row that points to it is committed, so a
committed row never names bytes that are not on disk; a record without a row (the writer died
between the two) is a torn tail that readers ignore and the next writer truncates. Every read
checks the header and the crc32, so a half-written or damaged record is never returned as data.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import numpy.typing as npt

from vpr_ros.core.errors import MapStoreError

__all__ = ["ENCODINGS", "HEADER", "encode", "decode", "payload_size", "record_bytes", "SegmentReader"]

ENCODINGS = ("float32", "float16", "int8")
MAGIC = b"VPRL"
_HEADER = struct.Struct("<4sQII")
HEADER = _HEADER.size


def payload_size(shape: tuple[int, int, int], encoding: str) -> int:
    """Bytes of one record's payload for an (h, w, c) map in ``encoding``."""
    h, w, c = shape
    return {"float32": 4 * h * w * c, "float16": 2 * h * w * c, "int8": 4 * h * w + h * w * c}[encoding]


def encode(local: npt.NDArray[np.float32], encoding: str) -> bytes:
    """(h, w, c) float32 -> payload bytes in ``encoding``."""
    x = np.ascontiguousarray(local, np.float32)
    if encoding == "float32":
        return x.astype("<f4").tobytes()
    if encoding == "float16":
        return x.astype("<f2").tobytes()
    peak = np.abs(x).max(axis=2)
    scale = (peak / 127.0).astype("<f4")
    # An all-zero location keeps scale 0 (decodes to zeros); dividing by 1 there avoids 0/0.
    q = np.rint(x / np.where(scale > 0, scale, 1.0)[..., None]).clip(-127, 127).astype(np.int8)
    return scale.tobytes() + q.tobytes()


def decode(payload: memoryview | bytes, shape: tuple[int, int, int], encoding: str) -> npt.NDArray[np.float32]:
    """Payload bytes -> a new (h, w, c) float32 array."""
    h, w, c = shape
    if encoding == "float32":
        return np.frombuffer(payload, "<f4").reshape(shape).astype(np.float32)
    if encoding == "float16":
        return np.frombuffer(payload, "<f2").reshape(shape).astype(np.float32)
    scale = np.frombuffer(payload, "<f4", count=h * w).reshape(h, w, 1)
    q = np.frombuffer(payload, np.int8, offset=4 * h * w).reshape(shape)
    return q.astype(np.float32) * scale


def record_bytes(key: int, payload: bytes) -> bytes:
    """Header + payload of one record."""
    return _HEADER.pack(MAGIC, key, len(payload), zlib.crc32(payload)) + payload


class SegmentReader:
    """Memory-mapped, checked reads of records in one map's segment files (read-only; never writes)."""

    def __init__(self, root: Path, shape: tuple[int, int, int], encoding: str) -> None:
        self.root = root
        self.shape = shape
        self.encoding = encoding
        self.payload = payload_size(shape, encoding)

    def path(self, segment: int) -> Path:
        return self.root / "local" / f"{segment:05d}.seg"

    def header_ok(self, segment: int, offset: int, key: int) -> bool:
        """Cheap check (no crc) that a whole record for ``key`` lies at ``offset``: used on open."""
        try:
            size = os.path.getsize(self.path(segment))
        except OSError:
            return False
        if offset + HEADER + self.payload > size:
            return False
        with open(self.path(segment), "rb") as f:
            f.seek(offset)
            magic, got_key, length, _ = _HEADER.unpack(f.read(HEADER))
        return magic == MAGIC and got_key == key and length == self.payload

    def read(self, segment: int, offset: int, key: int) -> npt.NDArray[np.float32]:
        """Local features of ``key`` (a new float32 array); MapStoreError names the segment if damaged.

        Each read maps just its record and unmaps it after decoding, so the pages of records read
        once do not stay in this process's RSS (the page cache still keeps them for the next read).
        """
        name = f"local/{segment:05d}.seg"
        try:
            m = np.memmap(self.path(segment), np.uint8, "r", offset=offset, shape=(HEADER + self.payload,))
        except (OSError, ValueError) as exc:  # ValueError: the file ends before the record does
            raise MapStoreError(f"map {self.root}: cannot read keyframe key {key}'s record in local feature "
                                f"segment {name} ({exc}); the map is damaged — re-create it or load "
                                "another") from None
        payload = None
        try:
            magic, got_key, length, crc = _HEADER.unpack(bytes(m[:HEADER]))
            payload = memoryview(m[HEADER:])
            if magic != MAGIC or got_key != key or length != self.payload or zlib.crc32(payload) != crc:
                raise MapStoreError(f"map {self.root}: local feature segment {name} is damaged at byte {offset} "
                                    f"(record of keyframe key {key} fails its header or crc32 check); re-create "
                                    "the map or load another")
            return decode(payload, self.shape, self.encoding)
        finally:
            del payload  # the mapping can only close once no view of it is left
            m._mmap.close()

    def close(self) -> None:
        """Nothing stays mapped between reads; kept for symmetry with the writer."""
