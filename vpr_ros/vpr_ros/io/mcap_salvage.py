"""Reading what is left of damaged MCAP files: truncated recordings, missing summary or metadata.yaml.

A recorder that is killed (power loss, OOM, full disk) leaves an MCAP file without its summary
section and footer, and often no ``metadata.yaml``; rosbags then refuses the whole bag. MCAP is
a sequence of length-prefixed records (``opcode u8, length u64, body``), so everything before the
first incomplete record can still be read. :class:`SalvagedMcap` scans the files front to back,
keeps schemas, channels and messages (also inside chunks, including the complete records of a
cut-off uncompressed chunk) and says how many bytes it could not use.

It offers the part of rosbags' ``AnyReader`` interface that :class:`vpr_ros.io.bags.ImageBag`
uses (``topics``, ``connections``, ``messages``, ``deserialize``, ``close``). It is a recovery path:
each file is read into memory whole, so salvage bags split into files of a size memory can hold.
"""

from __future__ import annotations

import dataclasses
import logging
import struct
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Collection, Iterator

from rosbags.rosbag2.errors import ReaderError
from rosbags.rosbag2.storage_mcap import decompress
from rosbags.serde import SerdeError

from vpr_ros.io.msgdefs import typestore

__all__ = ["SalvagedConnection", "SalvagedMcap", "MAGIC"]

logger = logging.getLogger(__name__)

MAGIC = b"\x89MCAP0\r\n"
_SCHEMA, _CHANNEL, _MESSAGE, _CHUNK = 0x03, 0x04, 0x05, 0x06


@dataclasses.dataclass(frozen=True)
class SalvagedConnection:
    """One channel of a salvaged file: ``msgcount`` counts the messages that could be read."""

    id: int
    topic: str
    msgtype: str
    msgcount: int


def _string(body: bytes, pos: int) -> tuple[str, int]:
    (n,) = struct.unpack_from("<I", body, pos)
    end = pos + 4 + n
    if end > len(body):
        raise struct.error("string runs past its record")
    return body[pos + 4:end].decode(), end


class _Scan:
    """Records of one file; ``good_end`` is the file offset after the last record that was usable."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.schemas: dict[int, str] = {}
        self.channels: dict[int, tuple[str, int]] = {}  # id -> (topic, schema id)
        self.messages: list[tuple[int, int, bytes]] = []  # (channel id, log time, data) in file order
        self.size = path.stat().st_size
        self.good_end = 0
        self.problem = ""

    def run(self) -> None:
        data = self.path.read_bytes()
        if data[:8] != MAGIC:
            self.problem = "not an MCAP file (bad magic)"
            return
        self.good_end = self._records(data, 8, top=True)

    def _records(self, data: bytes, pos: int, *, top: bool) -> int:
        """Parse records from ``pos``; returns the offset after the last complete one."""
        while pos + 9 <= len(data):
            op, length = data[pos], struct.unpack_from("<Q", data, pos + 1)[0]
            end = pos + 9 + length
            if end > len(data):
                self.problem = f"record at byte {pos} is cut off"
                if top and op == _CHUNK:
                    return pos + 9 + self._partial_chunk(data[pos + 9:])
                return pos
            try:
                self._record(op, data[pos + 9:end], top)
            except (struct.error, UnicodeDecodeError, ReaderError) as exc:
                self.problem = f"record at byte {pos} is damaged ({exc})"
                return pos
            pos = end
            if top and op == 0x02:  # footer: the file is complete up to its closing magic
                return pos + 8 if data[pos:pos + 8] == MAGIC else pos
        if pos < len(data):
            self.problem = f"record at byte {pos} is cut off"
        return pos

    def _record(self, op: int, body: bytes, top: bool) -> None:
        if op == _SCHEMA:
            (sid,) = struct.unpack_from("<H", body, 0)
            self.schemas[sid], _ = _string(body, 2)
        elif op == _CHANNEL:
            cid, sid = struct.unpack_from("<HH", body, 0)
            topic, _ = _string(body, 4)
            self.channels[cid] = (topic, sid)
        elif op == _MESSAGE:
            cid, _, log_time, _ = struct.unpack_from("<HIQQ", body, 0)
            self.messages.append((cid, log_time, body[22:]))
        elif op == _CHUNK and top:
            _, _, size, crc = struct.unpack_from("<QQQI", body, 0)
            compression, pos = _string(body, 28)
            (n,) = struct.unpack_from("<Q", body, pos)
            records = decompress(body[pos + 8:pos + 8 + n], compression, size, crc)
            self._records(records, 0, top=False)

    def _partial_chunk(self, body: bytes) -> int:
        """Read the complete records of a cut-off chunk; returns how many body bytes were used."""
        # Only an uncompressed chunk can be read in part; a compressed one is lost whole.
        try:
            compression, pos = _string(body, 28)
        except struct.error:
            return 0
        if compression != "":
            return 0
        problem = self.problem
        used = self._records(body[pos + 8:], 0, top=False)
        self.problem = problem
        return pos + 8 + used if used else 0


class SalvagedMcap:
    """Messages of MCAP files read front to back without their summary (see the module docstring).

    ``expected`` maps topic -> message count promised by ``metadata.yaml`` (empty when unknown).
    """

    def __init__(self, paths: Collection[Path], expected: dict[str, int] | None = None) -> None:
        self.paths = list(paths)
        scans = []
        for path in self.paths:
            scan = _Scan(path)
            scan.run()
            scans.append(scan)
        self._messages: list[tuple[tuple[str, int], int, bytes]] = []
        conns: dict[tuple[str, int], tuple[str, str]] = {}  # (file, channel id) -> (topic, type)
        for scan in scans:
            for cid, (topic, sid) in scan.channels.items():
                conns[(str(scan.path), cid)] = (topic, scan.schemas.get(sid, "?"))
            self._messages += [((str(scan.path), cid), t, raw) for cid, t, raw in scan.messages
                               if (str(scan.path), cid) in conns]
        by_topic: dict[str, list[tuple[str, int]]] = {}
        for key, (topic, _) in conns.items():
            by_topic.setdefault(topic, []).append(key)
        counts: dict[str, int] = {}
        for key, _, _ in self._messages:
            counts[conns[key][0]] = counts.get(conns[key][0], 0) + 1
        # one connection per topic, like rosbags (channels of split files are merged)
        self.connections = [SalvagedConnection(i, topic, conns[keys[0]][1], counts.get(topic, 0))
                            for i, (topic, keys) in enumerate(sorted(by_topic.items()))]
        self._conn_of = {key: c for c in self.connections for key in by_topic[c.topic]}
        self.topics = {c.topic: SimpleNamespace(msgtype=c.msgtype, msgcount=c.msgcount)
                       for c in self.connections}
        #: bytes at the ends of the files that could not be read
        self.lost_bytes = sum(s.size - s.good_end for s in scans)
        self.problems = [f"{s.path.name}: {s.problem}" for s in scans if s.problem]
        expected = expected or {}
        #: topic -> messages that ``metadata.yaml`` lists but that could not be read
        self.lost_messages = {t: max(0, n - counts.get(t, 0)) for t, n in expected.items()}
        self.num_messages = len(self._messages)

    def messages(self, connections: Collection[SalvagedConnection] = ()) -> Iterator[
            tuple[SalvagedConnection, int, bytes]]:
        wanted = {c.id for c in connections} if connections else None
        for key, log_time, raw in self._messages:
            conn = self._conn_of[key]
            if wanted is None or conn.id in wanted:
                yield conn, log_time, raw

    def deserialize(self, raw: bytes, msgtype: str) -> Any:
        try:
            return typestore().deserialize_cdr(raw, msgtype)
        except (SerdeError, KeyError, struct.error, ValueError, IndexError) as exc:
            # the same error class as rosbags' AnyReader, so ImageBag counts it as a corrupt message
            raise SerdeError(f"cannot deserialise {msgtype}: {exc}") from None

    def close(self) -> None:
        self._messages = []
