"""Checking the ``keyframes`` rows of a map database: one row into a Keyframe, a live map's torn tail.

Both formats use it: snapshot maps (``map.sqlite``, core/map/snapshot.py) and live maps (``log.sqlite``,
core/map/live_map.py). Every field is checked before use, so a damaged or crafted database gives a
MapStoreError that names the file and row, never a numpy or type error deep in the detector.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import numpy as np

from vpr_ros.core.errors import MapStoreError
from vpr_ros.core.types import Keyframe

__all__ = ["keyframe_from_row", "drop_torn_tail"]

def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def keyframe_from_row(db_path: Path, global_dim: int, map_has_local: bool, i: int, fields: tuple,
                      has_local: Any) -> Keyframe:
    """Row ``i`` -> Keyframe (local features stay where they are).

    fields: (key, id, robot_id, session_id, stamp_ns, pose, global) as stored; has_local: whether the
    row says it has local features (0/1 or bool; anything else is damage).
    """
    key, kid, robot, session, stamp, pose, glob = fields

    def bad(what: str) -> MapStoreError:
        return MapStoreError(f"map {db_path.parent}: {db_path.name} keyframe row {i} {what}; the map is damaged — "
                             "re-create it or load another")

    if key != i:
        raise bad(f"has key {key} (keys must run 0..n-1; a row is missing)")
    if not (_is_int(kid) and isinstance(robot, str) and isinstance(session, str) and _is_int(stamp)
            and has_local in (0, 1)):
        raise bad("has a field of the wrong type")
    if not isinstance(glob, bytes) or len(glob) != 4 * global_dim:
        raise bad(f"has a descriptor of {len(glob) if isinstance(glob, bytes) else type(glob).__name__} bytes, "
                  f"expected {4 * global_dim}")
    g = np.frombuffer(glob, "<f4").astype(np.float32)
    if not np.isfinite(g).all() or not np.any(g):
        raise bad("has a NaN, inf or all-zero descriptor")
    if pose is not None:
        if not isinstance(pose, bytes) or len(pose) != 128:
            raise bad("has a pose that is not 16 float64")
        pose = np.frombuffer(pose, "<f8").reshape(4, 4).astype(np.float64)
        if not np.isfinite(pose).all():
            raise bad("has a NaN or inf pose")
    if has_local and not map_has_local:
        raise bad("has local features but the meta has no local_shape")
    return Keyframe(id=kid, stamp_ns=stamp, robot_id=robot, session_id=session, global_=g, pose=pose)


def drop_torn_tail(root: Path, rows: list[tuple], reader: Any, db: sqlite3.Connection | None) -> list[tuple]:
    """A live map's committed rows (core/map/live_map.py), checked: every row's local-feature record is on
    disk. A writer fdatasyncs each record before its row commits, so a row without its record (a segment
    file deleted, emptied or cut) is damage, never a power loss: MapStoreError, and no row is deleted, by
    a reader or by the writer (``db``), so the map stays as it is for inspection."""
    for row in rows:
        if row[7] is not None and (reader is None or not reader.header_ok(row[7], row[8], row[0])):
            missing = sum(r[7] is not None and (reader is None or not reader.header_ok(r[7], r[8], r[0])) for r in rows)
            raise MapStoreError(f"map {root}: local feature segment local/{row[7]:05d}.seg lacks the record of "
                                f"keyframe key {row[0]} ({missing} of {len(rows)} keyframes lack theirs); records "
                                "reach the disk before their rows, so the map is damaged — it was left as it is: "
                                "keep it for inspection and start a new map (map.save_path)")
    return rows
