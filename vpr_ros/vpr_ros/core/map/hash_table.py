"""Keyframes' binary hashes in a map (SelaVPR++ ``-rerank``: 64 bytes each), what ``index.first_pass: hash``
searches first (core/hash_index.py).

Table ``hashes`` of ``map.sqlite`` (snapshot; the manifest's checksum of the file covers it) and of
``log.sqlite`` (live map; a keyframe's row commits in the same transaction as the keyframe)::

    key    keyframes.key of the keyframe
    code   its packed bits, B/8 bytes, MSB first (``np.packbits`` order)

Keyframes without a hash (models without one) have no row; maps written before the table existed have
no table and load with ``hash`` None, unchanged. A row naming a keyframe the map does not hold, a code
that is not bytes, or codes of different lengths in one map are damage: MapStoreError naming the map
(``vpr-ros map verify``: DAMAGED).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Sequence

import numpy as np

from vpr_ros.core.errors import MapStoreError
from vpr_ros.core.types import Keyframe

__all__ = ["TABLE", "write_table", "append_row", "read_table", "attach", "read_into", "count"]

TABLE = "hashes"
_CREATE = f"CREATE TABLE IF NOT EXISTS {TABLE} (key INTEGER PRIMARY KEY, code BLOB NOT NULL)"


def _code(kf: Keyframe) -> bytes:
    code = np.asarray(kf.hash)
    if code.dtype != np.uint8 or code.ndim != 1 or code.size == 0:
        raise MapStoreError(f"keyframe {kf.id} has a hash of type {code.dtype} and shape {code.shape}; a hash is "
                            "(B/8,) uint8 packed bits — nothing was saved")
    return code.tobytes()


def write_table(db: sqlite3.Connection, keyframes: Sequence[Keyframe]) -> int:
    """Snapshot: create the table and insert every keyframe's hash (key = list position); returns the count.
    Raises MapStoreError for a malformed hash or hashes of different lengths."""
    rows = [(key, _code(kf)) for key, kf in enumerate(keyframes) if kf.hash is not None]
    if len({len(code) for _, code in rows}) > 1:
        raise MapStoreError(f"keyframes have hashes of {sorted({len(c) for _, c in rows})} bytes; a map holds one "
                            "model's hashes — nothing was saved")
    if rows:  # maps of models without a hash get no table
        db.execute(_CREATE)
        db.executemany(f"INSERT INTO {TABLE} VALUES (?, ?)", rows)
    return len(rows)


def append_row(db: sqlite3.Connection, key: int, kf: Keyframe) -> None:
    """Live map: insert keyframe ``key``'s hash, if it has one, inside the caller's transaction (the table
    is created with the first hash, so live maps written before it existed continue unchanged)."""
    if kf.hash is None:
        return
    code = _code(kf)
    db.execute(_CREATE)
    first = db.execute(f"SELECT code FROM {TABLE} LIMIT 1").fetchone()
    if first is not None and len(first[0]) != len(code):
        raise MapStoreError(f"keyframe {kf.id} has a {len(code)}-byte hash, the map holds {len(first[0])}-byte ones; "
                            "a map holds one model's hashes")
    db.execute(f"INSERT INTO {TABLE} VALUES (?, ?)", (int(key), code))


def read_table(db: sqlite3.Connection, n: int, where: str | Path) -> dict[int, np.ndarray]:
    """key -> (B/8,) uint8 hash of a map of ``n`` keyframes; empty for a map without the table. Raises
    MapStoreError naming ``where`` for damage (module docstring)."""
    try:
        if not db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (TABLE,)).fetchone():
            return {}
        rows = db.execute(f"SELECT key, code FROM {TABLE} ORDER BY key").fetchall()
    except (sqlite3.Error, ValueError) as exc:
        raise MapStoreError(f"map {where}: table {TABLE} is damaged ({exc}); re-create the map or load another") from None
    sizes = {len(code) for _, code in rows if isinstance(code, bytes)}
    bad = [key for key, code in rows if not (isinstance(key, int) and 0 <= key < n and isinstance(code, bytes) and code)]
    if bad or len(sizes) > 1:
        raise MapStoreError(f"map {where}: table {TABLE} has {len(bad)} rows naming no keyframe of the map or holding "
                            f"no code, and codes of {sorted(sizes)} bytes (one size expected); the map is damaged — "
                            "re-create it or load another")
    return {key: np.frombuffer(code, np.uint8).copy() for key, code in rows}


def attach(keyframes: Sequence[Keyframe], codes: dict[int, np.ndarray]) -> None:
    for key, code in codes.items():
        keyframes[key].hash = code


def read_into(db: sqlite3.Connection, keyframes: Sequence[Keyframe], where: str | Path) -> int:
    """:func:`read_table` then :func:`attach` (key = list position); returns how many hashes."""
    codes = read_table(db, len(keyframes), where)
    attach(keyframes, codes)
    return len(codes)


def count(keyframes: Sequence[Keyframe]) -> tuple[int, int]:
    """(keyframes with a hash, bytes per hash or 0) of a loaded map, for ``vpr-ros map verify``."""
    sizes = [int(np.size(kf.hash)) for kf in keyframes if kf.hash is not None]
    return len(sizes), (sizes[0] if sizes else 0)
