"""Reading what is left of damaged MCAP files: truncated recordings, missing summary or metadata.yaml.

A recorder that is killed (power loss, OOM, full disk) leaves an MCAP file without its summary
section and footer, and often no ``metadata.yaml``; rosbags then refuses the whole bag. MCAP is
a sequence of length-prefixed records (``opcode u8, length u64, body``), so everything before the
first incomplete record can still be read. :class:`SalvagedMcap` scans the files front to back,
keeps schemas, channels and messages (also inside chunks, including the complete records of a
cut-off uncompressed chunk) and says how many bytes it could not use.

It offers the part of rosbags' ``AnyReader`` interface that :class:`vpr_ros.io.bags.ImageBag`
uses (``topics``, ``connections``, ``messages``, ``deserialize``, ``close``). Files are memory-mapped
and messages indexed by offset, so a multi-gigabyte recording is not read into memory.
"""

from __future__ import annotations

import dataclasses
import logging
import mmap
import struct
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Collection, Iterator, Union

from rosbags.rosbag2.errors import ReaderError
from rosbags.rosbag2.storage_mcap import decompress
from rosbags.serde import SerdeError

from vpr_ros.io.msgdefs import typestore

__all__ = ["SalvagedConnection", "SalvagedMcap", "MAGIC"]

logger = logging.getLogger(__name__)

MAGIC = b"\x89MCAP0\r\n"
_SCHEMA, _CHANNEL, _MESSAGE, _CHUNK = 0x03, 0x04, 0x05, 0x06
Buffer = Union[bytes, mmap.mmap]
PARTIAL_ZSTD = "zstd (cut off)"


@dataclasses.dataclass(frozen=True)
class SalvagedConnection:
    """One channel of a salvaged file: ``msgcount`` counts the messages that could be read."""

    id: int
    topic: str
    msgtype: str
    msgcount: int


def _zstd_prefix(data: bytes) -> bytes:
    """What zstd can decompress from the start of a cut-off frame (b"" when nothing)."""
    try:
        from compression import zstd  # Python 3.14
    except ImportError:
        from backports import zstd  # what rosbags uses before 3.14
    try:
        return zstd.ZstdDecompressor().decompress(data)
    except zstd.ZstdError:
        return b""


def _string(buf: Buffer, pos: int, end: int) -> tuple[str, int]:
    (n,) = struct.unpack_from("<I", buf, pos)
    stop = pos + 4 + n
    if stop > end:
        raise struct.error("string runs past its record")
    return bytes(buf[pos + 4:stop]).decode(), stop


class _Scan:
    """Index of one file's records; ``good_end``: the file offset after the last usable record.

    Messages are indexed, not copied: ``(chunk, offset, length, channel id, log time)`` where
    chunk -1 means ``offset`` is in the file itself (top level or an uncompressed chunk) and
    chunk k >= 0 means offset into compressed chunk ``self.chunks[k]`` once decompressed.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.schemas: dict[int, str] = {}
        self.channels: dict[int, tuple[str, int]] = {}  # id -> (topic, schema id)
        self.entries: list[tuple[int, int, int, int, int]] = []
        self.chunks: list[tuple[int, int, str, int, int]] = []  # (offset, length, compression, size, crc)
        self.size = path.stat().st_size
        self.good_end = 0
        self.problem = ""

    def run(self, mm: Buffer) -> None:
        if bytes(mm[:8]) != MAGIC:
            self.problem = "not an MCAP file (bad magic)"
            return
        self.good_end = self._records(mm, 8, len(mm), -1, top=True)

    def _records(self, buf: Buffer, pos: int, stop: int, chunk: int, *, top: bool) -> int:
        """Index records of ``buf[pos:stop]``; returns the offset after the last complete one."""
        while pos + 9 <= stop:
            op, length = buf[pos], struct.unpack_from("<Q", buf, pos + 1)[0]
            end = pos + 9 + length
            if end > stop:
                self.problem = f"record at byte {pos} is cut off"
                if top and op == _CHUNK:
                    return self._partial_chunk(buf, pos + 9, stop)
                return pos
            try:
                self._record(buf, op, pos + 9, end, chunk, top)
            except (struct.error, UnicodeDecodeError, ReaderError) as exc:
                self.problem = f"record at byte {pos} is damaged ({exc})"
                return pos
            pos = end
            if top and op == 0x02:  # footer: the file is complete up to its closing magic
                return pos + 8 if bytes(buf[pos:pos + 8]) == MAGIC else pos
        if pos < stop:
            self.problem = f"record at byte {pos} is cut off"
        return pos

    def _record(self, buf: Buffer, op: int, pos: int, end: int, chunk: int, top: bool) -> None:
        if op == _SCHEMA:
            (sid,) = struct.unpack_from("<H", buf, pos)
            self.schemas[sid], _ = _string(buf, pos + 2, end)
        elif op == _CHANNEL:
            cid, sid = struct.unpack_from("<HH", buf, pos)
            topic, _ = _string(buf, pos + 4, end)
            self.channels[cid] = (topic, sid)
        elif op == _MESSAGE:
            if end - pos < 22:
                raise struct.error("message record too short")
            cid, _, log_time, _ = struct.unpack_from("<HIQQ", buf, pos)
            self.entries.append((chunk, pos + 22, end - pos - 22, cid, log_time))
        elif op == _CHUNK and top:
            _, _, size, crc = struct.unpack_from("<QQQI", buf, pos)
            compression, data = _string(buf, pos + 28, end)
            (n,) = struct.unpack_from("<Q", buf, data)
            data += 8
            if data + n > end:
                raise struct.error("chunk data runs past its record")
            if compression == "":  # index the records in place: no copy
                if self._records(buf, data, data + n, -1, top=False) != data + n:
                    raise struct.error("chunk records are damaged")
            else:
                records = decompress(bytes(buf[data:data + n]), compression, size, crc)
                self.chunks.append((data, n, compression, size, crc))
                self._records(records, 0, len(records), len(self.chunks) - 1, top=False)

    def _partial_chunk(self, buf: Buffer, pos: int, stop: int) -> int:
        """Index the complete records of a cut-off chunk; returns the file offset read up to.

        An uncompressed chunk is read in place; a zstd chunk (rosbag2's MCAP default) is
        decompressed as far as its bytes go; any other compression loses the chunk whole.
        """
        record_start = pos - 9
        try:
            compression, data = _string(buf, pos + 28, stop)
        except struct.error:
            return record_start
        data += 8
        if data > stop:
            return record_start
        problem = self.problem
        if compression == "":
            used = self._records(buf, data, stop, -1, top=False)
        elif compression == "zstd":
            records = _zstd_prefix(bytes(buf[data:stop]))
            self.chunks.append((data, stop - data, PARTIAL_ZSTD, 0, 0))
            parsed = self._records(records, 0, len(records), len(self.chunks) - 1, top=False)
            # the file offset of the last usable byte is known only in proportion
            used = data + (stop - data) * parsed // len(records) if parsed else data
        else:
            used = data
        self.problem = problem
        return used if used > data else record_start

    def read(self, mm: Buffer, entry: tuple[int, int, int, int, int], cache: dict[int, bytes]) -> bytes:
        chunk, offset, length = entry[:3]
        if chunk < 0:
            return bytes(mm[offset:offset + length])
        if chunk not in cache:
            cache.clear()  # one decompressed chunk at a time
            data, n, compression, size, crc = self.chunks[chunk]
            raw = bytes(mm[data:data + n])
            cache[chunk] = (_zstd_prefix(raw) if compression == PARTIAL_ZSTD
                            else decompress(raw, compression, size, crc))
        return cache[chunk][offset:offset + length]


class SalvagedMcap:
    """Messages of MCAP files read front to back without their summary (see the module docstring).

    ``expected`` maps topic -> message count promised by ``metadata.yaml`` (empty when unknown).
    """

    def __init__(self, paths: Collection[Path], expected: dict[str, int] | None = None) -> None:
        self.paths = list(paths)
        self._maps: list[mmap.mmap | bytes] = []
        self._scans: list[_Scan] = []
        try:
            for path in self.paths:
                scan = _Scan(path)
                with open(path, "rb") as f:
                    mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if scan.size else b""
                self._maps.append(mm)
                scan.run(mm)
                self._scans.append(scan)
        except BaseException:
            self.close()
            raise
        conns: dict[tuple[int, int], tuple[str, str]] = {}  # (file no, channel id) -> (topic, type)
        for i, scan in enumerate(self._scans):
            for cid, (topic, sid) in scan.channels.items():
                conns[(i, cid)] = (topic, scan.schemas.get(sid, "?"))
        # (file no, entry) in file order; messages of channels never declared cannot be decoded
        self._entries = [(i, e) for i, scan in enumerate(self._scans) for e in scan.entries
                         if (i, e[3]) in conns]
        by_topic: dict[str, list[tuple[int, int]]] = {}
        for key, (topic, _) in conns.items():
            by_topic.setdefault(topic, []).append(key)
        counts: dict[str, int] = {}
        for i, e in self._entries:
            topic = conns[(i, e[3])][0]
            counts[topic] = counts.get(topic, 0) + 1
        # one connection per topic, like rosbags (channels of split files are merged)
        self.connections = [SalvagedConnection(n, topic, conns[keys[0]][1], counts.get(topic, 0))
                            for n, (topic, keys) in enumerate(sorted(by_topic.items()))]
        self._conn_of = {key: c for c in self.connections for key in by_topic[c.topic]}
        self.topics = {c.topic: SimpleNamespace(msgtype=c.msgtype, msgcount=c.msgcount)
                       for c in self.connections}
        #: bytes at the ends of the files that could not be read
        self.lost_bytes = sum(s.size - s.good_end for s in self._scans)
        self.problems = [f"{s.path.name}: {s.problem}" for s in self._scans if s.problem]
        expected = expected or {}
        #: topic -> messages that ``metadata.yaml`` lists but that could not be read
        self.lost_messages = {t: max(0, n - counts.get(t, 0)) for t, n in expected.items()}
        self.num_messages = len(self._entries)

    def messages(self, connections: Collection[SalvagedConnection] = ()) -> Iterator[
            tuple[SalvagedConnection, int, bytes]]:
        wanted = {c.id for c in connections} if connections else None
        cache: dict[int, bytes] = {}
        for i, entry in self._entries:
            conn = self._conn_of[(i, entry[3])]
            if wanted is None or conn.id in wanted:
                yield conn, entry[4], self._scans[i].read(self._maps[i], entry, cache)

    def deserialize(self, raw: bytes, msgtype: str) -> Any:
        try:
            return typestore().deserialize_cdr(raw, msgtype)
        except (SerdeError, KeyError, struct.error, ValueError, IndexError) as exc:
            # the same error class as rosbags' AnyReader, so ImageBag counts it as a corrupt message
            raise SerdeError(f"cannot deserialise {msgtype}: {exc}") from None

    def close(self) -> None:
        for mm in self._maps:
            if isinstance(mm, mmap.mmap):
                mm.close()
        self._maps = []
