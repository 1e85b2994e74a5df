"""The map tools' one door to the store: read a map without changing anything, write one crash-safely.

``vpr-ros map`` reads and writes maps only through this module, so when the store's format or API
changes (an append-only store), the tools change in one place. Reading never writes: a map with
leftovers of an interrupted save next to it is refused here, because the store's load would
recover (rename) them.
"""

from __future__ import annotations

import dataclasses
import os
import sqlite3
from pathlib import Path
from typing import Sequence

import numpy as np

from vpr_ros.core.map import live_map, loops_table, map_poses
from vpr_ros.core.map.atomic_dir import leftovers
from vpr_ros.core.errors import InputError, MapStoreError
from vpr_ros.core.index import KeyframeIndex
from vpr_ros.core.map.integrity import read_manifest
from vpr_ros.core.map.snapshot import DB, INDEX, MapMeta, check_save_target, load_keyframes, save_keyframes
from vpr_ros.core.types import Keyframe, LoopClosure

__all__ = ["MapData", "Ident", "open_map", "write_map", "disk_usage", "check_out_path", "check_outside",
           "index_mismatches", "INDEX_FILE"]

INDEX_FILE = INDEX
#: (robot_id, session_id, keyframe id): what names a keyframe across maps (map keys are positions).
Ident = tuple[str, str, int]


@dataclasses.dataclass
class MapData:
    """A map read into memory. keyframes in key order; loops as stored (core/map/loops_table.py)."""

    path: Path
    meta: MapMeta
    keyframes: list[Keyframe]
    loops: list[LoopClosure]
    has_manifest: bool
    #: stored optimised poses (core/map/map_poses.py) and their meta row (source_note, written_ns), or {} / None
    optimized: dict[map_poses.PoseKey, map_poses.MapPose] = dataclasses.field(default_factory=dict)
    optimized_info: dict | None = None

    def poses_to_keep(self) -> tuple[dict, str]:
        """(optimised poses, their source note): what a tool rewriting this map passes to write_map."""
        return self.optimized, (self.optimized_info or {}).get("source_note", "")

    def by_ident(self) -> dict[Ident, int]:
        """(robot, session, id) -> map key."""
        return {(k.robot_id, k.session_id, int(k.id)): key for key, k in enumerate(self.keyframes)}


def _check_map_dir(path: Path, flag: str) -> None:
    if not path.exists():
        raise InputError(f"{flag} {path} does not exist; give a map directory written by --map-save or "
                         "~/save_map")
    if not path.is_dir():
        raise InputError(f"{flag} {path} is a file; give a map directory (it holds {DB})")
    if not (path / DB).is_file() and not live_map.is_live_map(path):
        raise InputError(f"{flag} {path} is not a vpr_ros map (no {DB} in it); give a map directory "
                         "written by --map-save or ~/save_map")
    left = [p.name for p in leftovers(path)]  # marked by the store as its own; a user's MAP.old is not
    if left:
        raise InputError(f"{flag} {path}: an interrupted save left {', '.join(left)} next to it; these "
                         "read-only tools change nothing, so load the map once (vpr-ros replay --map-load, "
                         "or vpr-ros map compact) to let the store recover it")


def open_map(path: str | Path, *, load_local: bool = True, flag: str = "map") -> MapData:
    """Read the map at ``path`` (every file it reads checked against the manifest). Changes nothing.

    InputError when ``path`` is not a map (exit 2); MapStoreError naming the file when it is damaged.
    """
    path = Path(path).expanduser()
    _check_map_dir(path, flag)
    meta, keyframes = load_keyframes(path, load_local=load_local)
    if live_map.is_live_map(path):  # the node's live map: every local record is crc-checked as it is read
        log = live_map.MapLog(path)
        try:
            return _with_poses(MapData(path, meta, keyframes, list(log.loops), False))
        finally:
            log.close()
    try:
        db = sqlite3.connect((path / DB).absolute().as_uri() + "?mode=ro", uri=True)
        try:
            loops = loops_table.read_table(db, path)
        finally:
            db.close()
    except (sqlite3.Error, ValueError) as exc:
        raise MapStoreError(f"map {path}: {DB} is damaged ({exc}); re-create it or load another map") from None
    return _with_poses(MapData(path, meta, keyframes, loops, read_manifest(path) is not None))


def _with_poses(data: MapData) -> MapData:
    """``data`` with the map's optimised poses (checked row by row; load_keyframes verified the file)."""
    data.optimized = map_poses.read_optimized_poses(data.path, check_manifest=False)
    data.optimized_info = map_poses.optimized_poses_info(data.path)
    return data


def disk_usage(path: Path) -> dict[str, int]:
    """Bytes on disk by part: map.sqlite, index.faiss, local/ shards, other files; and total."""
    parts = {"map.sqlite": 0, "index.faiss": 0, "local": 0, "other": 0}
    for d, _, files in os.walk(path):
        for name in files:
            p = Path(d) / name
            rel = p.relative_to(path)
            part = (rel.parts[0] if rel.parts[0] in ("map.sqlite", "index.faiss", "local") else "other")
            parts[part] += p.lstat().st_size
    parts["total"] = sum(parts.values())
    return parts


def check_outside(out: str | Path, inputs: Sequence[Path], what: str) -> Path:
    """``out`` (absolute) unless it is one of ``inputs`` or inside one: a map directory holds only map files."""
    target = Path(out).expanduser().absolute()
    for src in inputs:
        src = src.absolute()
        if target.resolve() == src.resolve() or src.resolve() in target.resolve().parents:
            raise InputError(f"--out {out} is the input map {src} (or inside it); {what} must not write into "
                             "a map, so give a path outside it")
    return target


def check_out_path(out: str | Path, inputs: Sequence[Path], what: str) -> Path:
    """``out`` must be a new path, an empty directory or a map, and not one of (or inside) ``inputs``."""
    target = check_outside(out, inputs, what)
    try:
        return check_save_target(target)
    except MapStoreError as exc:
        raise InputError(f"--out {out}: {exc}") from None


def write_map(out: str | Path, keyframes: Sequence[Keyframe], loops: Sequence[LoopClosure],
              model_id: str, global_dim: int, sidecars_from: Path | None = None,
              optimized: tuple[dict, str] | None = None) -> Path:
    """Save a map through the store (crash-safe replace, refused while another writer owns ``out``); the
    FAISS file is an exact index of the descriptors (any loader rebuilds its own index from them, so its
    type does not matter). ``sidecars_from``: the map whose files the store does not own (the replay's
    frame index) are kept in the new one — a tool rewriting a map keeps every file it does not own.
    ``optimized``: (optimised poses, source note) to keep (core/map/map_poses.py)."""
    index = KeyframeIndex(global_dim)
    if keyframes:
        index.add(np.arange(len(keyframes)), np.stack([k.global_ for k in keyframes]))
    poses = None if not optimized or not optimized[0] else (map_poses.check_optimized(optimized[0]), optimized[1])
    return save_keyframes(out, keyframes, model_id, global_dim, index_writer=index.save, loops=loops,
                          sidecars_from=sidecars_from, poses=poses)


def index_mismatches(data: MapData) -> tuple[int, str]:
    """(number of keys whose index vector differs from the stored descriptor, why) for ``index.faiss``;
    (0, "") when it matches or the map has no index file."""
    path = data.path / INDEX
    if not path.exists():
        return 0, ""
    index = KeyframeIndex.load(path)
    n = len(data.keyframes)
    if len(index) != n:
        return abs(len(index) - n) or 1, f"it holds {len(index)} vectors for {n} keyframes"
    bad = 0
    for key, kf in enumerate(data.keyframes):
        try:
            vec = index.reconstruct(key)
        except RuntimeError:  # key absent from the index
            bad += 1
            continue
        want = kf.global_ / max(float(np.linalg.norm(kf.global_)), 1e-12)
        bad += int(not np.allclose(vec, want, atol=1e-5))
    return bad, (f"{bad} of {n} vectors differ from the descriptors in {DB}" if bad else "")
