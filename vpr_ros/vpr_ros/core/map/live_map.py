"""Incremental ("live") keyframe map: every keyframe is appended as it is made; a kill loses at most that one.

Layout (live format version 2)::

    live.json        written once, at creation (fsynced; its presence marks a map directory as complete):
                     kind, format_version, model_id, weights_digest, preprocessing, global_dim,
                     local_encoding (float32 | float16 | int8), segment_bytes
    log.sqlite       WAL mode, synchronous=NORMAL (see below). Tables:
                     meta(key, value JSON): local_shape ([h, w, c], set with the first local record)
                     keyframes(key 0..n-1, id, robot_id, session_id, stamp_ns, pose 16 float64 | NULL,
                               global D float32, segment | NULL, offset | NULL)
                     geometry (core/map/geometry_table.py), one row per keyframe with a camera, and
                     geometry_noise (its points' depth noise; created with the first row);
                     hashes (core/map/hash_table.py), one row per keyframe with a binary hash
    local/NNNNN.seg  dense local features, append-only records with crc32 (core/map/local_segments.py)

No FAISS file: the index is rebuilt from ``keyframes.global`` on open (10k x 1024-d: tens of ms), so a
stale or missing index can never make a map unloadable.

Append order: the local record is written and fdatasync'ed, then the row is committed. WAL with
``synchronous=NORMAL``: a commit reaches the WAL file before ``append`` returns, so a killed process
(SIGKILL, OOM) loses nothing committed; only a power loss may roll back the last commits (never
corrupting the database), which leaves their records as an ignored tail. FULL would add an fsync of
the WAL per keyframe for power-loss durability of the last ~second, which a loop-closure map at ~1
keyframe/s does not need. Opening checks every row's record header: a record that is missing (a
segment file deleted or emptied, ``local`` not a directory) is damage, since every record is on disk
before its row commits, so the map is refused (MapStoreError, ``map verify``: DAMAGED) and no row is
ever deleted. So is a ``log.sqlite-wal`` whose header is not SQLite's (SQLite would silently drop the
commits it holds) and a segment that is a symbolic link (a writer would write through it).

Readers change nothing in the directory: without a ``-wal`` file the database is opened immutable (no
``-wal``/``-shm`` created); with one (a writer is or was running) read-only. One writer at a time
(core/map/ownership.py): a second writer, or a tool replacing the map, is refused.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sqlite3
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import numpy.typing as npt

from vpr_ros.core.map import geometry_table, hash_table, loops_table, text_table, thumbnails
from vpr_ros.core.map.atomic_dir import MARKER, fsync_dir
from vpr_ros.core.map.live_checks import LOG, check_local, check_wal, open_segment
from vpr_ros.core.map.ownership import DirLock
from vpr_ros.core.errors import MapStoreError
from vpr_ros.core.map.rows import drop_torn_tail, keyframe_from_row
from vpr_ros.core.map.local_segments import ENCODINGS, HEADER, SegmentReader, encode, payload_size, record_bytes
from vpr_ros.core.text.place_text import PlaceLabel, TextReading
from vpr_ros.core.types import Keyframe, KeyframeGeometry, LoopClosure

__all__ = ["LIVE", "LOG", "LIVE_FORMAT", "MapLog", "fingerprint", "classify_live", "is_live_map", "is_live_name_set",
           "keyframes_with_local", "record_end"]

logger = logging.getLogger(__name__)

LIVE, LIVE_FORMAT = "live.json", 2
_KIND = "vpr_ros live map"
_NAMES = frozenset({LIVE, LOG, LOG + "-wal", LOG + "-shm", LOG + "-journal", "local", MARKER})
SEGMENT_BYTES = 1 << 28
_COLS = "key, id, robot_id, session_id, stamp_ns, pose, global, segment, offset"


def fingerprint(model: Any) -> dict[str, Any]:
    """What must match for two maps' descriptors to be comparable: model id, weights digest, preprocessing."""
    model_id = str(model.model_id)
    spec = getattr(model, "spec", None)
    prep = None if spec is None else {
        "recipe": getattr(spec, "preprocess", None), "input_size": list(getattr(spec, "input_size", ()) or ()),
        "patch_multiple": getattr(spec, "patch_multiple", None),
        "keep_aspect": bool(getattr(model, "keep_aspect", False))}
    return {"model_id": model_id, "weights_digest": model_id.partition("@")[2], "preprocessing": prep}


def is_live_map(path: str | Path) -> bool:
    return (Path(path).expanduser() / LIVE).is_file()


def is_live_name_set(names: set[str]) -> bool:
    """True when a directory listing can only be a (possibly partial) live map."""
    return bool(names) and names <= _NAMES and bool(names & {LIVE, LOG})


def classify_live(path: Path) -> str:
    """atomic_dir classification of a directory holding live-map names: complete, partial or foreign."""
    try:
        names = set(os.listdir(path))
        local = path / "local"
        if "local" in names and (local.is_symlink() or not local.is_dir()
                                 or not all(n.endswith(".seg") and n[:-4].isdigit() for n in os.listdir(local))):
            return "foreign"
    except OSError:
        return "foreign"
    if not names:
        return "empty"
    if not names <= _NAMES:
        return "foreign"
    return "complete" if {LIVE, LOG} <= names else "partial"


def _read_live(root: Path) -> dict[str, Any]:
    try:
        doc = json.loads((root / LIVE).read_bytes())
        ok = (doc.get("kind") == _KIND and isinstance(doc.get("model_id"), str)
              and isinstance(doc.get("global_dim"), int) and doc["global_dim"] > 0
              and doc.get("local_encoding") in ENCODINGS and isinstance(doc.get("segment_bytes"), int))
    except (OSError, ValueError, AttributeError) as exc:
        raise MapStoreError(f"map {root}: {LIVE} is damaged or unreadable ({exc}); re-create the map or load "
                            "another") from None
    if doc.get("format_version") != LIVE_FORMAT:
        raise MapStoreError(f"map {root}: {LIVE} has format version {doc.get('format_version')!r}, this vpr_ros "
                            f"reads {LIVE_FORMAT}; use the vpr_ros that wrote it")
    if not ok:
        raise MapStoreError(f"map {root}: {LIVE} has missing or invalid fields; re-create the map or load another")
    return doc


def _check_model(root: Path, doc: dict[str, Any], want: dict[str, Any]) -> None:
    for field, what in (("model_id", "model"), ("weights_digest", "weights"), ("preprocessing", "preprocessing")):
        if doc.get(field) != want.get(field):
            raise MapStoreError(
                f"map {root} was built with {what} {doc.get(field)!r} but this detector runs {want.get(field)!r}; "
                "descriptors of different models, weights or preprocessing cannot be compared — load the map "
                "with the same model.preset, weights and input settings, or start a new map")


def _reader(root: Path) -> sqlite3.Connection:
    """A read-only connection that creates no file in the map (see the module docstring)."""
    flag = "mode=ro" if os.path.exists(root / (LOG + "-wal")) else "immutable=1"
    return sqlite3.connect((root / LOG).as_uri() + "?" + flag, uri=True, check_same_thread=False)


def _rollback(db: sqlite3.Connection) -> None:
    """ROLLBACK that never hides the error being handled (after SQLITE_FULL the transaction may be gone)."""
    try:
        db.execute("ROLLBACK")
    except sqlite3.Error as exc:
        logger.debug("rollback after a failed write: %s", exc)


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    return db


class MapLog:
    """One open live map: its keyframes (local features on disk), appends when opened ``writable``."""

    def __init__(self, root: str | Path, fp: dict[str, Any] | None = None, writable: bool = False,
                 lazy_geometry: bool = False) -> None:
        self.root = Path(root).expanduser().absolute()
        if not is_live_map(self.root):
            raise MapStoreError(f"{self.root} is not a live vpr_ros map (no {LIVE})")
        self.doc = _read_live(self.root)
        if fp is not None:
            _check_model(self.root, self.doc, fp)
        self.writable = writable
        self.encoding: str = self.doc["local_encoding"]
        self.global_dim: int = self.doc["global_dim"]
        self._db: sqlite3.Connection | None = None
        self._file: Any = None
        self._owner: DirLock | None = None
        self._reader: SegmentReader | None = None
        # lazy_geometry: keyframes' geometry stays on disk (read_geometry), as their local features do.
        self.geometry: geometry_table.LazyGeometry | None = None
        self._lazy = lazy_geometry
        try:
            if writable:
                self._owner = DirLock(self.root)  # refuses while another writer owns the map
            check_wal(self.root)
            check_local(self.root)
            self._load(writable)
        except BaseException:
            self.close()  # a failed open leaves no connection, file or lock behind
            raise

    def _load(self, writable: bool) -> None:
        try:
            db = _connect(self.root / LOG) if writable else _reader(self.root)
        except (sqlite3.Error, ValueError) as exc:
            raise MapStoreError(f"map {self.root}: cannot open {LOG} ({exc}); re-create it or load another "
                                "map") from None
        if writable:
            self._db = db
        try:
            try:
                meta = {k: json.loads(v) for k, v in db.execute("SELECT key, value FROM meta")}
                rows = db.execute(f"SELECT {_COLS} FROM keyframes ORDER BY key").fetchall()
                geometry = {} if self._lazy else geometry_table.read_geometry(db, self.root, len(rows))
                geometry_keys = geometry_table.geometry_keys(db) if self._lazy else set()
                thumbs = thumbnails.read_table(db, len(rows))
                self.loops: list[LoopClosure] = loops_table.read_table(db, self.root)
                texts, labels = text_table.read_tables(db, len(rows), self.root)
            except (sqlite3.Error, ValueError) as exc:
                raise MapStoreError(f"map {self.root}: {LOG} is damaged ({exc}); re-create it or load another "
                                    "map") from None
            shape = meta.get("local_shape")
            self.local_shape = None if shape is None else tuple(int(s) for s in shape)
            if self.local_shape is not None:
                self._reader = SegmentReader(self.root, self.local_shape, self.encoding)
            self.keyframes: list[Keyframe] = []
            self.locations: list[tuple[int, int] | None] = []
            rows = drop_torn_tail(self.root, rows, self._reader, db if writable else None)
            for i, row in enumerate(rows):
                self.keyframes.append(keyframe_from_row(self.root / LOG, self.global_dim, self.local_shape is not None,
                                                          i, row[:7], row[7] is not None))
                self.locations.append(None if row[7] is None else (int(row[7]), int(row[8])))
            geometry_table.attach(self.keyframes, {k: g for k, g in geometry.items() if k < len(rows)})
            if self._lazy:
                self.geometry = geometry_table.LazyGeometry(self.root / LOG, {k for k in geometry_keys if k < len(rows)})
            for key, jpeg in thumbs.items():
                if key < len(self.keyframes):
                    self.keyframes[key].thumbnail = jpeg
            text_table.attach(self.keyframes, texts, labels)
            hash_table.read_into(db, self.keyframes, self.root)  # binary hashes (core/map/hash_table.py)
            self._keys = {(kf.robot_id, kf.session_id, kf.id): k for k, kf in enumerate(self.keyframes)}
            if writable:
                thumbnails.ensure_table(db)  # live maps written before thumbnails and loops were kept
                loops_table.ensure_table(db)
                text_table.ensure_tables(db)
                self._open_tail()
        finally:
            if not writable:
                db.close()

    # -- open ----------------------------------------------------------------------------
    def _open_tail(self) -> None:
        """Writer: continue the last used segment, cutting off a torn or uncommitted tail record."""
        last = next((loc for loc in reversed(self.locations) if loc is not None), None)
        self._segment, end = (0, 0) if last is None else (last[0], last[1] + HEADER + self._record_payload())
        for name in os.listdir(self.root / "local"):
            if name.endswith(".seg") and int(name[:-4]) > self._segment:
                os.unlink(self.root / "local" / name)  # records of no committed keyframe
        path = self.root / "local" / f"{self._segment:05d}.seg"
        self._file = open_segment(path)
        if os.path.getsize(path) > end:
            logger.warning("map %s: dropped %d bytes of a keyframe being written when the writer stopped",
                           self.root, os.path.getsize(path) - end)
            self._file.truncate(end)
        self._end = end

    def _record_payload(self) -> int:
        return payload_size(self.local_shape, self.encoding) if self.local_shape else 0

    # -- use -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.keyframes)

    def read_local(self, key: int) -> npt.NDArray[np.float32] | None:
        """(h, w, c) float32 local features of ``key`` (decoded from disk, crc-checked), None if it has none."""
        loc = self.locations[key]
        if loc is None or self._reader is None:
            return None
        return self._reader.read(loc[0], loc[1], key)

    def append(self, kf: Keyframe) -> int:
        """Make ``kf`` durable (against a process kill; see the module docstring); returns its key."""
        if self._db is None:
            raise MapStoreError(f"map {self.root} is open read-only (or closed); it cannot be appended to")
        if np.shape(kf.global_) != (self.global_dim,):
            raise MapStoreError(f"keyframe {kf.id}: descriptor of shape {np.shape(kf.global_)} does not fit map "
                                f"{self.root} ({self.global_dim}-d)")
        geometry_table.check_geometry(kf)
        key = len(self.keyframes)
        loc = None
        db = self._db
        shape_before, reader_before = self.local_shape, self._reader
        segment_before = (self._segment, self._end)
        db.execute("BEGIN IMMEDIATE")
        try:
            if kf.local is not None:
                loc = self._write_record(key, kf.local, db)
            db.execute(f"INSERT INTO keyframes ({_COLS}) VALUES ({', '.join('?' * 9)})", (
                key, int(kf.id), str(kf.robot_id), str(kf.session_id), int(kf.stamp_ns),
                None if kf.pose is None else np.asarray(kf.pose, "<f8").tobytes(),
                np.asarray(kf.global_, "<f4").tobytes(), None if loc is None else loc[0],
                None if loc is None else loc[1]))
            geometry_table.append_rows(db, key, kf)  # geometry and its depth noise
            thumbnails.append_row(db, key, kf)
            text_table.append_rows(db, key, kf)
            hash_table.append_row(db, key, kf)
            db.execute("COMMIT")
        except BaseException:
            _rollback(db)
            # the meta row of a first record and a segment switch were rolled back with it
            self.local_shape, self._reader = shape_before, reader_before
            if (self._segment, self._end) != segment_before and self._segment != segment_before[0]:
                self._file.close()
                self._segment, self._end = segment_before
                self._file = open_segment(self.root / "local" / f"{self._segment:05d}.seg")
            raise
        if loc is not None:
            self._end = loc[1] + HEADER + self._record_payload()
        self.keyframes.append(Keyframe(id=kf.id, stamp_ns=kf.stamp_ns, robot_id=kf.robot_id, session_id=kf.session_id,
                                       global_=np.asarray(kf.global_, np.float32), pose=kf.pose,
                                       geometry=None if self.geometry is not None else kf.geometry,
                                       thumbnail=kf.thumbnail, text=kf.text, labels=tuple(kf.labels), hash=kf.hash))
        self.locations.append(loc)
        self._keys[(kf.robot_id, kf.session_id, kf.id)] = key
        if self.geometry is not None and kf.geometry is not None:
            self.geometry.add(key)
        return key

    def read_geometry(self, key: int) -> KeyframeGeometry | None:
        """Keyframe ``key``'s geometry: from memory, or from disk when the log was opened lazy_geometry."""
        return self.keyframes[key].geometry if self.geometry is None else self.geometry.read(key)

    def key_of(self, robot_id: str, session_id: str, keyframe_id: int) -> int | None:
        """The map key of a keyframe named by robot, session and id; None if the map lacks it."""
        return self._keys.get((robot_id, session_id, int(keyframe_id)))

    def set_text(self, key: int, readings: Sequence[TextReading]) -> None:
        """Store what OCR read on keyframe ``key`` (replacing earlier readings; core/map/text_table.py)."""
        self._write(lambda db: text_table.put_text(db, key, readings))
        self.keyframes[key].text = tuple(readings)

    def add_label(self, key: int, label: PlaceLabel) -> None:
        """Add a place label to keyframe ``key``; durable when this returns."""
        self._write(lambda db: text_table.put_label(db, key, label))
        self.keyframes[key].labels = (*self.keyframes[key].labels, label)

    def _write(self, change: Callable[[sqlite3.Connection], None]) -> None:
        if self._db is None:
            raise MapStoreError(f"map {self.root} is open read-only (or closed); it cannot be changed")
        self._db.execute("BEGIN IMMEDIATE")
        try:
            change(self._db)
            self._db.execute("COMMIT")
        except BaseException:
            _rollback(self._db)
            raise

    def append_loops(self, loops: list[LoopClosure]) -> None:
        """Make accepted ``loops`` durable with the map (for vpr-ros map report/export)."""
        self._write(lambda db: loops_table.append_rows(db, loops))
        self.loops.extend(loops)

    def write_tables(self, change: Callable[[sqlite3.Connection], None]) -> None:
        """Apply ``change(db)`` in one transaction, durable on return (tables other modules own, e.g.
        core/map/pose_table.py's optimised poses)."""
        self._write(change)

    def _write_record(self, key: int, local: npt.NDArray[np.float32], db: sqlite3.Connection) -> tuple[int, int]:
        shape = tuple(np.shape(local))
        if self.local_shape is None:
            if len(shape) != 3:
                raise MapStoreError(f"local features must be (h, w, c), got {shape}")
            db.execute("INSERT INTO meta VALUES ('local_shape', ?)", (json.dumps(list(shape)),))
            self.local_shape = shape
            self._reader = SegmentReader(self.root, shape, self.encoding)
        elif shape != self.local_shape:
            raise MapStoreError(f"local features of shape {shape} do not fit map {self.root} ({self.local_shape}); "
                                "a map holds one model's features")
        record = record_bytes(key, encode(local, self.encoding))
        if self._end and self._end + len(record) > self.doc["segment_bytes"]:
            self._file.close()
            self._segment, self._end = self._segment + 1, 0
            self._file = open_segment(self.root / "local" / f"{self._segment:05d}.seg")
            fsync_dir(self.root / "local")
        self._file.seek(self._end)
        self._file.write(record)
        self._file.flush()
        # The row committed next must never name bytes a power loss could lose.
        os.fdatasync(self._file.fileno())
        return self._segment, self._end

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._reader is not None:
            self._reader.close()
        if self.geometry is not None:
            self.geometry.close()
        if self._owner is not None:
            self._owner.release()  # the map has no writer any more
            self._owner = None


def record_end(log: MapLog, segment_offset: tuple[int, int]) -> int:
    """Byte just after the record at ``(segment, offset)`` of ``log``."""
    return segment_offset[1] + HEADER + log._record_payload()


def keyframes_with_local(log: MapLog, keys: Sequence[int]) -> list[Keyframe]:
    """Copies of ``log``'s keyframes ``keys`` with their local features (and geometry) read (tools, tests)."""
    out = []
    for k in keys:
        kf = log.keyframes[k]
        out.append(dataclasses.replace(kf, local=log.read_local(k), geometry=log.read_geometry(k)))
    return out
