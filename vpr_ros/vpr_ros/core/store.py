"""Persistent keyframe map: a directory holding SQLite metadata, a FAISS index and local-feature shards.

Layout (format version 1)::

    map.sqlite      meta(key, value); keyframes(key, id, robot_id, session_id, stamp_ns, pose, global)
    index.faiss     the FAISS index (IndexIDMap2) keyed like ``keyframes.key``
    local/NNNNN.npy dense local features, (n, h, w, c) float32, SHARD keyframes per file, by key order

A save writes a new directory next to the target and swaps it in, so a crash mid-save never
destroys the map that was there before.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Sequence

import numpy as np

from vpr_ros.core.errors import MapStoreError
from vpr_ros.core.types import Keyframe

__all__ = ["save_keyframes", "load_keyframes", "MapMeta", "FORMAT_VERSION"]

FORMAT_VERSION = 1
SHARD = 256


class MapMeta(dict):
    """Metadata of a saved map: format_version, model_id, global_dim, local_shape, num_keyframes."""


def save_keyframes(path: str | Path, keyframes: Sequence[Keyframe], model_id: str,
                   global_dim: int, index_writer=None) -> None:
    """Write ``keyframes`` (their list position is the key) as a map directory at ``path``.

    ``index_writer(path)`` writes the FAISS index file when given.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp-save")
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        (tmp / "local").mkdir(parents=True)
        local_shape = next((list(k.local.shape) for k in keyframes if k.local is not None), None)
        db = sqlite3.connect(tmp / "map.sqlite")
        with db:
            db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            db.execute("CREATE TABLE keyframes (key INTEGER PRIMARY KEY, id INTEGER NOT NULL, "
                       "robot_id TEXT NOT NULL, session_id TEXT NOT NULL, stamp_ns INTEGER NOT NULL, "
                       "pose BLOB, global BLOB NOT NULL, has_local INTEGER NOT NULL)")
            meta = {"format_version": FORMAT_VERSION, "model_id": model_id, "global_dim": global_dim,
                    "local_shape": local_shape, "num_keyframes": len(keyframes)}
            db.executemany("INSERT INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in meta.items()])
            db.executemany(
                "INSERT INTO keyframes VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(key, kf.id, kf.robot_id, kf.session_id, kf.stamp_ns,
                  None if kf.pose is None else np.asarray(kf.pose, np.float64).tobytes(),
                  np.asarray(kf.global_, np.float32).tobytes(), int(kf.local is not None))
                 for key, kf in enumerate(keyframes)])
        db.close()
        if local_shape is not None:
            zeros = np.zeros(local_shape, np.float32)
            for start in range(0, len(keyframes), SHARD):
                chunk = [k.local if k.local is not None else zeros for k in keyframes[start:start + SHARD]]
                np.save(tmp / "local" / f"{start // SHARD:05d}.npy", np.stack(chunk).astype(np.float32))
        if index_writer is not None:
            index_writer(tmp / "index.faiss")
        old = path.with_name(path.name + ".old")
        if path.exists():
            if old.exists():
                shutil.rmtree(old)
            path.rename(old)
        tmp.rename(path)
        if old.exists():
            shutil.rmtree(old)
    except OSError as exc:
        raise MapStoreError(f"cannot save map to {path}: {exc}; check the directory is writable "
                            "and the disk has space (the previous map, if any, is untouched)") from exc


def read_meta(path: str | Path) -> MapMeta:
    """Read only the metadata of the map at ``path``."""
    path = Path(path)
    db_path = path / "map.sqlite"
    if not db_path.is_file():
        raise MapStoreError(f"{path} is not a vpr_ros map (no map.sqlite); give the directory "
                            "written by save_map")
    try:
        db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
        rows = db.execute("SELECT key, value FROM meta").fetchall()
        db.close()
    except sqlite3.Error as exc:
        raise MapStoreError(f"map {path} is damaged ({exc}); re-create it or load another map") from None
    meta = MapMeta({k: json.loads(v) for k, v in rows})
    if meta.get("format_version") != FORMAT_VERSION:
        raise MapStoreError(f"map {path} has format version {meta.get('format_version')}, this "
                            f"vpr_ros reads version {FORMAT_VERSION}")
    return meta


def load_keyframes(path: str | Path, model_id: str | None = None,
                   load_local: bool = True) -> tuple[MapMeta, list[Keyframe]]:
    """Read a map directory. Raises MapStoreError when it is missing, damaged or was built with
    another model than ``model_id``."""
    path = Path(path)
    meta = read_meta(path)
    if model_id is not None and meta["model_id"] != model_id:
        raise MapStoreError(
            f"map {path} was built with model {meta['model_id']!r} but this detector runs "
            f"{model_id!r}; descriptors of different models cannot be compared — load the map with "
            "the same model.preset and weights")
    dim = int(meta["global_dim"])
    try:
        db = sqlite3.connect(f"file:{path / 'map.sqlite'}?mode=ro", uri=True)
        rows = db.execute("SELECT key, id, robot_id, session_id, stamp_ns, pose, global, has_local "
                          "FROM keyframes ORDER BY key").fetchall()
        db.close()
    except sqlite3.Error as exc:
        raise MapStoreError(f"map {path} is damaged ({exc}); re-create it or load another map") from None
    locals_: list[np.ndarray] = []
    if load_local and meta.get("local_shape") is not None:
        for shard in range((len(rows) + SHARD - 1) // SHARD):
            shard_path = path / "local" / f"{shard:05d}.npy"
            try:
                locals_.extend(np.load(shard_path))
            except (OSError, ValueError) as exc:
                raise MapStoreError(f"map {path}: local feature shard {shard_path.name} is missing "
                                    f"or damaged ({exc}); re-create the map") from None
    keyframes = []
    for key, kid, robot, session, stamp, pose, glob, has_local in rows:
        g = np.frombuffer(glob, np.float32)
        if g.shape != (dim,):
            raise MapStoreError(f"map {path}: keyframe {key} has a {g.size}-d descriptor, expected {dim}")
        keyframes.append(Keyframe(
            id=kid, stamp_ns=stamp, robot_id=robot, session_id=session, global_=g.copy(),
            local=np.asarray(locals_[key], np.float32) if locals_ and has_local else None,
            pose=None if pose is None else np.frombuffer(pose, np.float64).reshape(4, 4).copy()))
    return meta, keyframes
