"""The table of optimised keyframe poses in a map database (core/map/map_poses.py says what they mean).

In ``map.sqlite`` of a snapshot map (covered by the manifest's checksum of ``map.sqlite``) and in
``log.sqlite`` of a live map (core/map/live_map.py)::

    optimized_poses  robot_id TEXT, session_id TEXT, keyframe_id INTEGER  (primary key: the keyframe's
                     identity, not its map key, so the poses survive merging maps),
                     pose BLOB (16 float64 little-endian, T_map_base row-major),
                     covariance BLOB (36 float64 little-endian, ROS order x y z rot_x rot_y rot_z)
    meta row ``optimized_poses``: JSON {"version": 1, "count": rows, "source_note": who wrote them and
                     how, "written_ns": wall-clock time of the write}

One write replaces the whole table (the poses of one optimisation are consistent only with each other)
in one transaction. A map without the table has no optimised poses; older vpr_ros versions ignore it.
Every row is checked when read (and by ``vpr-ros map verify``): identity types, blob sizes, finite
values, a rigid transform, a symmetric positive semi-definite covariance, a keyframe the map holds, the
row count of the meta row; anything else is a MapStoreError naming the file, the table and the row.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import numpy.typing as npt

from vpr_ros.core.errors import MapStoreError

__all__ = ["TABLE", "META_KEY", "VERSION", "pose_problem", "covariance_problem", "has_table", "write_table",
           "read_table", "read_info"]

F64 = npt.NDArray[np.float64]
TABLE = "optimized_poses"
META_KEY = "optimized_poses"
VERSION = 1
_DDL = (f"CREATE TABLE IF NOT EXISTS {TABLE} (robot_id TEXT NOT NULL, session_id TEXT NOT NULL, "
        "keyframe_id INTEGER NOT NULL, pose BLOB NOT NULL, covariance BLOB NOT NULL, "
        "PRIMARY KEY (robot_id, session_id, keyframe_id))")
#: (robot_id, session_id, keyframe_id) -> (T_map_base (4, 4), covariance (6, 6))
Rows = Mapping[tuple[str, str, int], tuple[F64, F64]]


def _rotation_ok(R: F64) -> bool:
    return bool(np.allclose(R.T @ R, np.eye(3), atol=1e-6) and np.linalg.det(R) > 0)


def pose_problem(T: F64) -> str:
    """Why ``T`` is not a finite rigid (4, 4) transform, or ""."""
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        return f"the pose must be a finite (4, 4) matrix, got shape {T.shape}"
    if not np.allclose(T[3], [0, 0, 0, 1]) or not _rotation_ok(T[:3, :3]):
        return "the pose is not a rigid transform (rotation not orthonormal, or last row not 0 0 0 1)"
    return ""


def covariance_problem(cov: F64) -> str:
    """Why ``cov`` is not a finite symmetric positive semi-definite (6, 6) matrix, or ""."""
    if cov.shape != (6, 6) or not np.all(np.isfinite(cov)):
        return f"the covariance must be a finite (6, 6) matrix, got shape {cov.shape}"
    scale = max(float(np.abs(cov).max()), 1e-300)
    if not np.allclose(cov, cov.T, rtol=0, atol=1e-9 * scale) \
            or np.linalg.eigvalsh((cov + cov.T) / 2).min() < -1e-9 * scale:
        return "the covariance is not symmetric positive semi-definite"
    return ""


def has_table(db: sqlite3.Connection) -> bool:
    return db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (TABLE,)).fetchone() is not None


def write_table(db: sqlite3.Connection, rows: Rows, source_note: str) -> int:
    """Replace the table's rows by ``rows`` and the meta row, inside the caller's transaction; returns
    the count. ``rows`` must be valid (MapPose checked them)."""
    db.execute(_DDL)
    db.execute(f"DELETE FROM {TABLE}")
    db.executemany(f"INSERT INTO {TABLE} VALUES (?, ?, ?, ?, ?)", [
        (str(r), str(s), int(k), np.asarray(T, "<f8").tobytes(), np.asarray(C, "<f8").tobytes())
        for (r, s, k), (T, C) in rows.items()])
    info = {"version": VERSION, "count": len(rows), "source_note": str(source_note), "written_ns": time.time_ns()}
    db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (META_KEY, json.dumps(info)))
    return len(rows)


def read_info(db: sqlite3.Connection, where: Path) -> dict[str, Any] | None:
    """The meta row (version, count, source_note, written_ns), None when the map has no optimised poses."""
    row = db.execute("SELECT value FROM meta WHERE key = ?", (META_KEY,)).fetchone()
    table = has_table(db)
    if row is None and not table:
        return None

    def bad(what: str) -> MapStoreError:
        return MapStoreError(f"map {where.parent}: {where.name} {what}; the map's optimised poses are damaged — "
                             "run vpr-ros map optimize again, or re-create the map")

    if row is None or not table:
        raise bad(f"has {'the meta row' if row else 'the table'} {TABLE} without the "
                  f"{'table' if row else 'meta row'}")
    try:
        info = json.loads(row[0])
    except (TypeError, ValueError):
        raise bad(f"meta {META_KEY} is not JSON") from None
    if not isinstance(info, dict) or not isinstance(info.get("count"), int) or not isinstance(
            info.get("source_note"), str) or not isinstance(info.get("written_ns"), int):
        raise bad(f"meta {META_KEY} has missing or invalid fields")
    if info.get("version") != VERSION:
        raise MapStoreError(f"map {where.parent}: table {TABLE} has version {info.get('version')!r}, this vpr_ros "
                            f"reads version {VERSION}; use the vpr_ros that wrote it")
    return info


def read_table(db: sqlite3.Connection, where: Path, idents: Iterable[tuple[str, str, int]] | None = None
               ) -> dict[tuple[str, str, int], tuple[F64, F64]]:
    """Every row, checked (see the module docstring); ``where``: the database file, for messages.
    ``idents``: the keyframes the map holds (each row must name one), or None to skip that check."""
    info = read_info(db, where)
    if info is None:
        return {}
    known = None if idents is None else set(idents)
    out: dict[tuple[str, str, int], tuple[F64, F64]] = {}
    rows = db.execute(f"SELECT robot_id, session_id, keyframe_id, pose, covariance FROM {TABLE} "
                      "ORDER BY robot_id, session_id, keyframe_id").fetchall()
    for n, (robot, session, kid, pose, cov) in enumerate(rows):
        def bad(what: str) -> MapStoreError:
            return MapStoreError(f"map {where.parent}: {where.name} table {TABLE} row {n} (robot {robot!r}, session "
                                 f"{session!r}, keyframe {kid!r}) {what}; the optimised poses are damaged — run "
                                 "vpr-ros map optimize again, or re-create the map")

        if not (isinstance(robot, str) and isinstance(session, str) and isinstance(kid, int)):
            raise bad("has an identity of the wrong type")
        if not (isinstance(pose, bytes) and len(pose) == 128 and isinstance(cov, bytes) and len(cov) == 288):
            raise bad("has a pose or covariance of the wrong size (16 and 36 float64)")
        T = np.frombuffer(pose, "<f8").reshape(4, 4).astype(np.float64)
        C = np.frombuffer(cov, "<f8").reshape(6, 6).astype(np.float64)
        problem = pose_problem(T) or covariance_problem(C)
        if problem:
            raise bad(f"is invalid: {problem}")
        if known is not None and (robot, session, kid) not in known:
            raise bad("names a keyframe the map does not hold")
        out[(robot, session, kid)] = (T, C)
    if len(out) != info["count"]:
        raise MapStoreError(f"map {where.parent}: {where.name} table {TABLE} holds {len(out)} rows but its meta "
                            f"row says {info['count']}; the optimised poses are damaged — run vpr-ros map optimize "
                            "again, or re-create the map")
    return out
