"""Accepted loop closures stored with the map, so tools can show and export them after the run.

Table ``loops`` of ``map.sqlite`` (covered by the manifest's checksum of ``map.sqlite``), one row per
accepted :class:`LoopClosure`, in the order they were found. Keyframes are named by
(robot_id, session_id, keyframe id), not by map key, so loops survive merging maps. Columns are the
LoopClosure fields; ``relative_pose`` is 16 float64 (4x4 row-major) or NULL, ``covariance`` 36
float64 or NULL, booleans 0/1. The MNN cell pairs are not stored: ``vpr-ros map report``
recomputes them from the keyframes' stored local features (exact MNN is deterministic).

Maps saved before the table existed have none and load with no loops.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from vpr_ros.core.errors import MapStoreError
from vpr_ros.core.types import LoopClosure

__all__ = ["TABLE", "write_table", "read_table", "ensure_table", "append_rows"]

TABLE = "loops"
_FIELDS = [f.name for f in dataclasses.fields(LoopClosure)]
_PY = {"int": int, "str": str, "float": float}
_MATRICES = {"relative_pose": (4, 4), "covariance": (6, 6)}


def _value(name: str, value: Any) -> Any:
    if name in _MATRICES:
        return None if value is None else np.asarray(value, np.float64).reshape(_MATRICES[name]).tobytes()
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def write_table(db: sqlite3.Connection, loops: Iterable[LoopClosure]) -> int:
    """Create the table and insert ``loops``; returns the count."""
    db.execute(f"CREATE TABLE {TABLE} (seq INTEGER PRIMARY KEY, {', '.join(_FIELDS)})")
    rows = [(seq, *(_value(n, getattr(loop, n)) for n in _FIELDS)) for seq, loop in enumerate(loops)]
    db.executemany(f"INSERT INTO {TABLE} VALUES ({', '.join('?' * (len(_FIELDS) + 1))})", rows)
    return len(rows)


def ensure_table(db: sqlite3.Connection) -> None:
    """The table, created if missing (live maps: core/map/live_map.py; older live maps have none)."""
    db.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (seq INTEGER PRIMARY KEY, {', '.join(_FIELDS)})")


def append_rows(db: sqlite3.Connection, loops: Iterable[LoopClosure]) -> int:
    """Append ``loops`` after the stored ones (inside the caller's transaction); returns the count."""
    start = db.execute(f"SELECT COALESCE(MAX(seq) + 1, 0) FROM {TABLE}").fetchone()[0]
    rows = [(seq, *(_value(n, getattr(loop, n)) for n in _FIELDS)) for seq, loop in enumerate(loops, start)]
    db.executemany(f"INSERT INTO {TABLE} VALUES ({', '.join('?' * (len(_FIELDS) + 1))})", rows)
    return len(rows)


def read_table(db: sqlite3.Connection, path: Path) -> list[LoopClosure]:
    """The stored loops (empty for maps without the table); MapStoreError names a damaged row."""
    if not db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (TABLE,)).fetchone():
        return []
    types = {f.name: f.type for f in dataclasses.fields(LoopClosure)}
    loops = []
    for row in db.execute(f"SELECT {', '.join(_FIELDS)} FROM {TABLE} ORDER BY seq"):
        values: dict[str, Any] = {}
        for name, value in zip(_FIELDS, row):
            if name in _MATRICES:
                if value is not None:
                    if not isinstance(value, bytes) or len(value) != 8 * int(np.prod(_MATRICES[name])):
                        raise MapStoreError(f"map {path}: map.sqlite table {TABLE} has a {name} of the wrong size; "
                                            "the map is damaged — re-create it or load another")
                    value = np.frombuffer(value, np.float64).reshape(_MATRICES[name]).copy()
            elif types[name] == "bool":
                value = bool(value)
            elif types[name] == "float" and isinstance(value, (int, float)):
                value = float(value)
            elif not isinstance(value, _PY[types[name]]):
                raise MapStoreError(f"map {path}: map.sqlite table {TABLE} has a {name} of type "
                                    f"{type(value).__name__}; the map is damaged — re-create it or load another")
            values[name] = value
        try:
            loops.append(LoopClosure(**values))
        except TypeError as exc:
            raise MapStoreError(f"map {path}: map.sqlite table {TABLE} is damaged ({exc}); re-create the map") from None
    return loops
