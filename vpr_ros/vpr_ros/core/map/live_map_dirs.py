"""Creating, continuing and copying live map directories (core/map/live_map.py), crash-safely.

A new live map is written into a temporary sibling and swapped in by core/map/atomic_dir.py, so a crash
while creating one, or while writing a snapshot ("save as") over an existing map, leaves the old
content of the path or the complete new map, never neither.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from pathlib import Path
from typing import Any

from vpr_ros.core.map import atomic_dir, geometry_table, loops_table, thumbnails
from vpr_ros.core.map.atomic_dir import fsync_dir, fsync_file
from vpr_ros.core.errors import MapStoreError
from vpr_ros.core.map.local_segments import ENCODINGS
from vpr_ros.core.map.live_map import (_KIND, LIVE, LIVE_FORMAT, LOG, SEGMENT_BYTES, MapLog, _connect, is_live_map,
                                  record_end)
from vpr_ros.core.map.snapshot import classify_dir

__all__ = ["init_dir", "open_for_append", "snapshot"]


def init_dir(root: Path, fp: dict[str, Any], global_dim: int, encoding: str,
             segment_bytes: int = SEGMENT_BYTES) -> None:
    """Write an empty live map into the (empty) directory ``root``, fsynced; live.json last."""
    if encoding not in ENCODINGS:
        raise MapStoreError(f"local feature encoding {encoding!r} is unknown; choose one of {', '.join(ENCODINGS)}")
    (root / "local").mkdir()
    db = _connect(root / LOG)
    try:
        db.execute("BEGIN")
        db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.execute("CREATE TABLE keyframes (key INTEGER PRIMARY KEY, id INTEGER NOT NULL, robot_id TEXT NOT NULL, "
                   "session_id TEXT NOT NULL, stamp_ns INTEGER NOT NULL, pose BLOB, global BLOB NOT NULL, "
                   "segment INTEGER, offset INTEGER)")
        geometry_table.create_table(db)
        thumbnails.ensure_table(db)
        loops_table.ensure_table(db)
        db.execute("COMMIT")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()
    fsync_file(root / LOG)
    doc = {"kind": _KIND, "format_version": LIVE_FORMAT, **fp, "global_dim": int(global_dim),
           "local_encoding": encoding, "segment_bytes": int(segment_bytes)}
    (root / LIVE).write_text(json.dumps(doc, indent=1, sort_keys=True))
    fsync_file(root / LIVE)
    fsync_dir(root / "local")
    fsync_dir(root)


def _copy_into(log: MapLog, root: Path) -> None:
    """Write a consistent copy of ``log`` into the empty directory ``root`` (for atomic_dir)."""
    (root / "local").mkdir()
    src = sqlite3.connect(log.root / LOG)
    try:
        dst = sqlite3.connect(root / LOG)
        try:
            src.backup(dst)
            dst.execute("PRAGMA journal_mode=WAL")
        finally:
            dst.close()
    finally:
        src.close()
    fsync_file(root / LOG)
    ends: dict[int, int] = {}
    for loc in log.locations:
        if loc is not None:
            ends[loc[0]] = record_end(log, loc)
    for segment, end in ends.items():  # committed records only: an appending writer's tail stays behind
        name = f"{segment:05d}.seg"
        with open(log.root / "local" / name, "rb") as fin, open(root / "local" / name, "wb") as fout:
            remaining = end
            while remaining:
                chunk = fin.read(min(remaining, 1 << 22))
                if not chunk:
                    raise MapStoreError(f"map {log.root}: local/{name} is shorter than its records")
                fout.write(chunk)
                remaining -= len(chunk)
            fout.flush()
            os.fsync(fout.fileno())
    fsync_dir(root / "local")
    shutil.copyfile(log.root / LIVE, root / LIVE)  # last: marks the copy complete
    fsync_file(root / LIVE)


def open_for_append(path: str | Path, fp: dict[str, Any], global_dim: int, encoding: str,
                    segment_bytes: int = SEGMENT_BYTES, lazy_geometry: bool = False) -> MapLog:
    """Open the live map at ``path`` for appending (continuing it), creating it first when ``path`` is
    missing or an empty directory (crash-safely, core/map/atomic_dir.py). A live map of another model, a
    snapshot map (it would be emptied) and anything that is not a map are refused and left untouched.
    ``lazy_geometry``: see :class:`MapLog`."""
    target = Path(path).expanduser()
    atomic_dir.recover(Path(os.path.abspath(target)), classify_dir)
    if is_live_map(target):
        return MapLog(target, fp, writable=True, lazy_geometry=lazy_geometry)
    if classify_dir(Path(os.path.abspath(target))) in ("complete", "legacy"):
        raise MapStoreError(f"map {path} is a snapshot map (saved with map.append false, ~/save_map or --map-save); "
                            "a live map cannot continue it and it was left untouched — load it with "
                            "map.load_path and give map.save_path a new directory for the live map")
    try:
        root = atomic_dir.replace_dir(target, lambda tmp: init_dir(tmp, fp, global_dim, encoding, segment_bytes),
                                      classify_dir)
    except (OSError, sqlite3.Error) as exc:
        raise MapStoreError(f"cannot create map {path}: {exc}; check the directory is writable and the disk has "
                            "space") from exc
    return MapLog(root, fp, writable=True, lazy_geometry=lazy_geometry)


def snapshot(log: MapLog, path: str | Path) -> Path:
    """Copy ``log`` to ``path`` ("save as"): a crash leaves the old content of ``path`` or the copy."""
    try:
        return atomic_dir.replace_dir(Path(path).expanduser(), lambda tmp: _copy_into(log, tmp), classify_dir)
    except MapStoreError:
        raise
    except (OSError, sqlite3.Error) as exc:
        raise MapStoreError(f"cannot save map to {path}: {exc}; check the directory is writable and the disk has "
                            "space (the map that was at that path, if any, is unchanged)") from exc
