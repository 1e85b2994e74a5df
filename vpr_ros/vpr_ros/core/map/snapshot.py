"""Persistent keyframe map: a directory holding SQLite metadata, a FAISS index and local-feature shards.

Layout (format version 1)::

    map.sqlite      meta(key, value JSON); keyframes(key, id, robot_id, session_id, stamp_ns, pose,
                    global, has_local); pose: 16 float64 (4x4, row-major) or NULL; global: D float32
    index.faiss     the FAISS index (IndexIDMap2) keyed like ``keyframes.key``
    local/NNNNN.npy dense local features, (n, h, w, c) float32, ``shard_size`` keyframes per file,
                    by key order (zeros for keyframes without local features)
    manifest.json   size and SHA-256 of each file above (core/map/integrity.py); written last

map.sqlite also holds the table ``geometry`` (core/map/geometry_table.py, since issue 9): per keyframe with a
camera, its keypoints, descriptors and 3-D points for relative poses of loops against a loaded map;
since issue 10 the tables ``thumbnails`` (core/map/thumbnails.py) and ``loops`` (core/map/loops_table.py);
since issue 13 ``place_text`` and ``place_labels`` (core/map/text_table.py); since issue 23 ``hashes``
(core/map/hash_table.py, keyframes' binary hashes; maps without it load with hash None); since issue 21 ``optimized_poses``
(core/map/pose_table.py, with the meta key ``optimized_poses``) and ``geometry_noise`` (the keyframes' depth
noise, core/map/geometry_table.py; maps without it load with the coefficient unknown).

meta keys: format_version, model_id, global_dim, local_shape ([h, w, c] or null), num_keyframes,
and since issue 8: global_dtype, local_dtype ("float32"), shard_size, manifest (true); since issue 9:
geometry (true: the geometry table exists; absent in older maps, which load with geometry None).

Safety (issue 8): a save replaces only a missing path, an empty directory or a vpr_ros map, and swaps
the new map in crash-safely (core/map/atomic_dir.py). A load verifies every file it reads against the
manifest, then checks counts, shapes, dtypes and values against the meta, and raises MapStoreError
naming the file for anything it meets. Maps saved before the manifest existed still load, with a
warning that damage cannot be detected in them; saving them again adds it.

Live maps (issue 10, core/map/live_map.py: ``live.json``, ``log.sqlite``, ``local/NNNNN.seg``) are maps too:
a save may replace one, and :func:`load_keyframes` / :func:`read_meta` read them (format_version 2).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from vpr_ros.core.map import atomic_dir, geometry_table, live_map, loops_table, pose_table, text_table, thumbnails
from vpr_ros.core.map import hash_table
from vpr_ros.core.map.live_map import classify_live, is_live_name_set
from vpr_ros.core.map.atomic_dir import fsync_dir, fsync_file
from vpr_ros.core.errors import MapStoreError
from vpr_ros.core.index import KeyframeIndex
from vpr_ros.core.map.ownership import DirLock, probe
from vpr_ros.core.map.rows import keyframe_from_row
from vpr_ros.core.map.storable import copy_sidecars, only_storable
from vpr_ros.core.map.integrity import MANIFEST, read_manifest, read_npy, verify_file, write_manifest, write_npy
from vpr_ros.core.types import Keyframe, LoopClosure

__all__ = ["save_keyframes", "load_keyframes", "read_meta", "check_save_target", "classify_dir", "MapMeta",
           "FORMAT_VERSION"]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
SHARD = 256
DB, INDEX = "map.sqlite", "index.faiss"
#: Files other writers put into a map directory (cli/session.py's frame index). The store does not own
#: them: a save that rewrites a map's own content (``sidecars_from``) carries them over.
SIDECARS = frozenset({"vpr_frame_index.json", "vpr_frame_index.json.tmp"})
_TOP_NAMES = frozenset({DB, DB + "-journal", INDEX, MANIFEST, "local", atomic_dir.MARKER}) | SIDECARS
_SHARD_NAME = re.compile(r"\d{5}\.npy")
_F32 = np.dtype(np.float32)


class MapMeta(dict):
    """Metadata of a saved map: format_version, model_id, global_dim, local_shape, num_keyframes."""


def _ro_connect(db_path: Path) -> sqlite3.Connection:
    # as_uri() escapes '?', '#' and '%' in the path, which a plain f"file:{path}" would misparse.
    return sqlite3.connect(db_path.absolute().as_uri() + "?mode=ro", uri=True)


def classify_dir(path: Path) -> str:
    """What ``path`` holds, for atomic_dir: missing, empty, complete, legacy, partial or foreign."""
    if not os.path.lexists(path):
        return "missing"
    if path.is_symlink() or not path.is_dir():
        return "foreign"
    try:
        names = set(os.listdir(path))
        if is_live_name_set(names):  # an incremental map (core/map/live_map.py): saves may replace it too
            return classify_live(path)
        local = path / "local"
        if "local" in names and (local.is_symlink() or not local.is_dir()
                                 or not all(_SHARD_NAME.fullmatch(n) for n in os.listdir(local))):
            return "foreign"
    except OSError:
        return "foreign"
    if not names:
        return "empty"
    if not names <= _TOP_NAMES:
        return "foreign"
    if DB not in names:
        return "partial"
    if MANIFEST in names:
        return "complete"
    try:  # a map.sqlite without a manifest: a map saved before checksums if its meta reads
        read_meta(path)
    except MapStoreError:
        return "partial"  # e.g. a save killed while writing map.sqlite: our names, not a map
    return "legacy"


def _validate(keyframes: Sequence[Keyframe], global_dim: int) -> list[int] | None:
    local_shape = next((list(k.local.shape) for k in keyframes if k.local is not None), None)
    for kf in keyframes:
        if np.shape(kf.global_) != (global_dim,):
            raise MapStoreError(f"keyframe {kf.id} has a descriptor of shape {np.shape(kf.global_)}, expected "
                                f"({global_dim},); nothing was saved")
        if kf.local is not None and list(kf.local.shape) != local_shape:
            raise MapStoreError(f"keyframe {kf.id} has local features of shape {kf.local.shape}, others "
                                f"{tuple(local_shape)}; a map holds one model's features — nothing was saved")
        if kf.pose is not None and np.shape(kf.pose) != (4, 4):
            raise MapStoreError(f"keyframe {kf.id} has a pose of shape {np.shape(kf.pose)}; nothing was saved")
        geometry_table.check_geometry(kf)
    return local_shape


def _write(root: Path, keyframes: Sequence[Keyframe], model_id: str, global_dim: int,
           local_shape: list[int] | None, index_writer: Callable[[Path], None] | None,
           loops: Sequence[LoopClosure] = (), poses: tuple[pose_table.Rows, str] | None = None) -> None:
    (root / "local").mkdir()
    files = [DB]
    db = sqlite3.connect(root / DB)
    try:
        db.execute("PRAGMA synchronous=FULL")
        with db:
            db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            db.execute("CREATE TABLE keyframes (key INTEGER PRIMARY KEY, id INTEGER NOT NULL, "
                       "robot_id TEXT NOT NULL, session_id TEXT NOT NULL, stamp_ns INTEGER NOT NULL, "
                       "pose BLOB, global BLOB NOT NULL, has_local INTEGER NOT NULL)")
            meta = {"format_version": FORMAT_VERSION, "model_id": model_id, "global_dim": global_dim,
                    "local_shape": local_shape, "num_keyframes": len(keyframes), "global_dtype": "float32",
                    "local_dtype": "float32", "shard_size": SHARD, "manifest": True, "geometry": True}
            db.executemany("INSERT INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in meta.items()])
            db.executemany(
                "INSERT INTO keyframes VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(key, int(kf.id), str(kf.robot_id), str(kf.session_id), int(kf.stamp_ns),
                  None if kf.pose is None else np.asarray(kf.pose, np.float64).tobytes(),
                  np.asarray(kf.global_, np.float32).tobytes(), int(kf.local is not None))
                 for key, kf in enumerate(keyframes)])
            geometry_table.create_table(db)
            db.executemany(f"INSERT INTO {geometry_table.TABLE} VALUES ({', '.join('?' * 13)})",
                           geometry_table.geometry_rows(keyframes))
            geometry_table.write_noise(db, keyframes)  # the points' depth noise, since issue 21
            thumbnails.write_table(db, keyframes)
            loops_table.write_table(db, loops)
            text_table.write_tables(db, keyframes)
            hash_table.write_table(db, keyframes)  # binary hashes (index.first_pass=hash), since issue 23
            if poses is not None:  # optimised poses (core/map/map_poses.py): rows, source note
                pose_table.write_table(db, *poses)
    finally:
        db.close()
    fsync_file(root / DB)
    if local_shape is not None:
        zeros = np.zeros(local_shape, np.float32)
        for start in range(0, len(keyframes), SHARD):
            name = f"local/{start // SHARD:05d}.npy"
            chunk = [k.local if k.local is not None else zeros for k in keyframes[start:start + SHARD]]
            write_npy(root / name, np.stack(chunk).astype(np.float32))
            files.append(name)
    if index_writer is not None:
        index_writer(root / INDEX)
        fsync_file(root / INDEX)
        _check_index(root / INDEX, len(keyframes))
        files.append(INDEX)
    fsync_dir(root / "local")
    write_manifest(root, files)  # last: its presence marks the save complete


def _check_index(path: Path, count: int) -> None:
    # FAISS reports some write errors (ENOSPC at close) only on stderr; read the file back to be sure.
    if len(KeyframeIndex.load(path)) != count:
        raise MapStoreError(f"the FAISS index written to {path} is incomplete; check the disk has space")


def save_keyframes(path: str | Path, keyframes: Sequence[Keyframe], model_id: str,
                   global_dim: int, index_writer: Callable[[Path], None] | None = None,
                   loops: Sequence[LoopClosure] = (), owner: DirLock | None = None,
                   sidecars_from: Path | None = None, poses: tuple[pose_table.Rows, str] | None = None) -> Path:
    """Write ``keyframes`` (their list position is the key) as a map directory at ``path``.

    ``path`` may be missing, an empty directory or a vpr_ros map (replaced crash-safely); anything
    else, or a map another writer owns (core/map/ownership.py), is refused with MapStoreError and left
    untouched. ``index_writer(path)`` writes the FAISS index file when given. ``loops``: accepted loop
    closures stored with the map (core/map/loops_table.py). ``owner``: the caller's ownership of
    ``path``. ``sidecars_from``: a map directory whose files the store does not own (the frame index)
    are copied into the new map (tools rewriting a map: label, compact). ``poses``: optimised poses to
    keep, (rows, source note) as core/map/pose_table.py stores them. Returns the absolute
    directory written (a link to a map is followed).
    """
    keyframes, loops, index_writer = only_storable(keyframes, loops, index_writer, global_dim)
    local_shape = _validate(keyframes, global_dim)

    def write(root: Path) -> None:
        _write(root, keyframes, model_id, global_dim, local_shape, index_writer, loops, poses)
        copy_sidecars(sidecars_from, SIDECARS, root)

    try:
        return atomic_dir.replace_dir(path, write, classify_dir, owner)
    except MapStoreError:
        raise
    except (OSError, sqlite3.Error, RuntimeError, MemoryError) as exc:
        raise MapStoreError(f"cannot save map to {path}: {exc}; check the directory is writable and the disk "
                            "has space (the map that was at that path, if any, is unchanged)") from exc
    except (ValueError, TypeError, OverflowError) as exc:  # a keyframe field SQLite cannot hold
        raise MapStoreError(f"cannot save map to {path}: a keyframe cannot be stored ({exc}); the map that was "
                            "at that path, if any, is unchanged") from exc


def check_save_target(path: str | Path) -> Path:
    """Raise MapStoreError now if a later :func:`save_keyframes` to ``path`` would be refused.

    For callers that must check their outputs before long work (a replay, a node's startup): the
    path may be replaced and the nearest existing parent is a writable directory. Touches nothing.
    """
    target = atomic_dir.resolve_target(path, classify_dir)
    probe(target)  # another writer owns it: refused now, not after the long work
    parent = next(p for p in target.parents if os.path.lexists(p))
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise MapStoreError(f"cannot save map to {path}: {parent} is not a writable directory; choose "
                            "another map path")
    return target


def read_meta(path: str | Path) -> MapMeta:
    """Read only the metadata of the map at ``path`` (checked for types, not against the files)."""
    path = Path(path)
    if live_map.is_live_map(path):
        return _live_meta(live_map.MapLog(path))
    db_path = path / DB
    if not db_path.is_file():
        raise MapStoreError(f"{path} is not a vpr_ros map (no {DB}); give the directory written by save_map")
    try:
        db = _ro_connect(db_path)
        try:
            rows = db.execute("SELECT key, value FROM meta").fetchall()
        finally:
            db.close()
    except (sqlite3.Error, ValueError) as exc:  # ValueError: text that is not UTF-8 (UnicodeDecodeError)
        raise MapStoreError(f"map {path}: {DB} is damaged ({exc}); re-create it or load another map") from None
    try:
        meta = MapMeta({str(k): json.loads(v) for k, v in rows})
    except (ValueError, TypeError) as exc:
        raise MapStoreError(f"map {path}: {DB} has a meta value that is not JSON ({exc}); the map is damaged "
                            "— re-create it or load another") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise MapStoreError(f"map {path} has format version {meta.get('format_version')!r}, this "
                            f"vpr_ros reads version {FORMAT_VERSION}")
    _check_meta(path, meta)
    return meta


def _is_int(v: Any, low: int = 0) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= low


def _check_meta(path: Path, meta: MapMeta) -> None:
    shape = meta.get("local_shape")
    problems = [key for key, ok in (
        ("model_id", isinstance(meta.get("model_id"), str)),
        ("global_dim", _is_int(meta.get("global_dim"), 1)),
        ("num_keyframes", _is_int(meta.get("num_keyframes"))),
        ("local_shape", "local_shape" in meta and (shape is None or (
            isinstance(shape, list) and len(shape) == 3 and all(_is_int(s, 1) for s in shape)))),
        ("shard_size", _is_int(meta.get("shard_size", SHARD), 1)),
        ("global_dtype", meta.get("global_dtype", "float32") == "float32"),
        ("local_dtype", meta.get("local_dtype", "float32") == "float32"),
        ("manifest", isinstance(meta.get("manifest", False), bool)),
        ("geometry", isinstance(meta.get("geometry", False), bool))) if not ok]
    if problems:
        raise MapStoreError(f"map {path}: {DB} meta has missing or invalid {', '.join(problems)}; the map is "
                            "damaged — re-create it or load another")


def load_keyframes(path: str | Path, model_id: str | None = None, load_local: bool = True,
                   load_geometry: bool = True) -> tuple[MapMeta, list[Keyframe]]:
    """Read a map directory. Raises MapStoreError when it is missing, damaged or was built with
    another model than ``model_id``; the error names the damaged file. Reading changes nothing on
    disk, except that the leftovers of an interrupted save are recovered first. ``~`` is expanded.
    ``load_geometry``: also read each keyframe's KeyframeGeometry (None where it has none)."""
    path = Path(path).expanduser()
    try:
        atomic_dir.recover(Path(os.path.abspath(path)), classify_dir)
    except (OSError, ValueError) as exc:  # ValueError: "/" has no siblings
        logger.warning("could not recover leftovers of an interrupted save next to %s: %s", path, exc)
    if live_map.is_live_map(path):
        return _load_live(path, model_id, load_local, load_geometry)
    manifest = read_manifest(path) if (path / DB).is_file() else None
    verify_file(path, manifest, DB)
    meta = read_meta(path)
    if manifest is None:
        if meta.get("manifest"):
            raise MapStoreError(f"map {path}: {MANIFEST} is missing; the map is damaged — re-create it or "
                                "load another")
        logger.warning("map %s has no %s (saved by vpr_ros before checksums): damage in its files cannot be "
                       "detected; save it again to add them", path, MANIFEST)
    if model_id is not None and meta["model_id"] != model_id:
        raise MapStoreError(
            f"map {path} was built with model {meta['model_id']!r} but this detector runs "
            f"{model_id!r}; descriptors of different models cannot be compared — load the map with "
            "the same model.preset and weights")
    if manifest is not None and INDEX in manifest:
        verify_file(path, manifest, INDEX)  # not read (rebuilt from the descriptors), but damage is reported
    try:
        db = _ro_connect(path / DB)
        try:
            rows = db.execute("SELECT key, id, robot_id, session_id, stamp_ns, pose, global, has_local "
                              "FROM keyframes ORDER BY key").fetchall()
            # Maps without the table (saved before issue 9) load with geometry None.
            geometry = (geometry_table.read_geometry(db, path, len(rows))
                        if meta.get("geometry") and load_geometry else {})
            thumbs = thumbnails.read_table(db, len(rows))
            texts, labels = text_table.read_tables(db, len(rows), path)
            codes = hash_table.read_table(db, len(rows), path)
        finally:
            db.close()
    except (sqlite3.Error, ValueError) as exc:  # ValueError: text that is not UTF-8 (UnicodeDecodeError)
        raise MapStoreError(f"map {path}: {DB} is damaged ({exc}); re-create it or load another map") from None
    if len(rows) != meta["num_keyframes"]:
        raise MapStoreError(f"map {path}: {DB} holds {len(rows)} keyframes but its meta says "
                            f"{meta['num_keyframes']}; the map is damaged — re-create it or load another")
    dim, size = int(meta["global_dim"]), int(meta.get("shard_size", SHARD))
    has_local = meta["local_shape"] is not None
    keyframes = [keyframe_from_row(path / DB, dim, has_local, i, row[:7], row[7]) for i, row in enumerate(rows)]
    geometry_table.attach(keyframes, geometry)
    for key, jpeg in thumbs.items():
        keyframes[key].thumbnail = jpeg
    text_table.attach(keyframes, texts, labels)
    hash_table.attach(keyframes, codes)
    shards = _read_shards(path, meta, manifest, len(rows)) if load_local else None
    if shards is not None:
        for i, (kf, row) in enumerate(zip(keyframes, rows)):
            if row[7]:
                kf.local = shards[i // size][i % size]  # a view: the shard stays the only copy
    return meta, keyframes


def _read_shards(path: Path, meta: MapMeta, manifest: dict | None, n: int) -> list[np.ndarray] | None:
    shape = meta.get("local_shape")
    if shape is None:
        return None
    size = int(meta.get("shard_size", SHARD))
    count = (n + size - 1) // size
    expected = {f"{i:05d}.npy" for i in range(count)}
    try:
        present = set(os.listdir(path / "local"))
    except OSError:
        present = set()
    if present - expected:
        raise MapStoreError(f"map {path}: local/ holds shards {sorted(present - expected)} that {n} keyframes do "
                            "not need; the map is damaged — re-create it or load another")
    shards = []
    for i in range(count):
        name = f"local/{i:05d}.npy"
        verify_file(path, manifest, name)
        arr = read_npy(path / name, (min(size, n - i * size), *shape), _F32)
        if not np.isfinite(arr).all():
            raise MapStoreError(f"map {path}: {name} holds NaN or inf; the map is damaged — re-create it")
        shards.append(arr)
    return shards


def _live_meta(log: live_map.MapLog) -> MapMeta:
    doc = log.doc
    return MapMeta(format_version=doc["format_version"], model_id=doc["model_id"], global_dim=doc["global_dim"],
                   local_shape=None if log.local_shape is None else list(log.local_shape), num_keyframes=len(log),
                   local_dtype=doc["local_encoding"], weights_digest=doc.get("weights_digest"),
                   preprocessing=doc.get("preprocessing"), live=True)


def _load_live(path: Path, model_id: str | None, load_local: bool, load_geometry: bool
               ) -> tuple[MapMeta, list[Keyframe]]:
    """A live map (core/map/live_map.py) read whole, for tools that want plain keyframes (locals in RAM)."""
    log = live_map.MapLog(path)
    try:
        meta = _live_meta(log)
        if model_id is not None and meta["model_id"] != model_id:
            raise MapStoreError(f"map {path} was built with model {meta['model_id']!r} but this detector runs "
                                f"{model_id!r}; descriptors of different models cannot be compared — load the map "
                                "with the same model.preset and weights")
        keyframes = live_map.keyframes_with_local(log, range(len(log))) if load_local else list(log.keyframes)
        if not load_geometry:
            for kf in keyframes:
                kf.geometry = None
        return meta, keyframes
    finally:
        log.close()
