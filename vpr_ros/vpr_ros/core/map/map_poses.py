"""Keyframe poses in the map frame (issue 21): what a loaded map says about where each keyframe is.

**The map frame.** A map loaded into a later session defines the frame ``map``. It is the odometry frame
of the map's *frame session*, the (robot, session) of the map's first keyframe (key 0, the mapping
session), unless a pose graph ran (``vpr-ros map optimize``, the live ``pose_graph_node``): then it is
the optimised frame, which the pose graph anchors at the frame session's first keyframe, so the two
agree there and differ by the corrected drift elsewhere.

:class:`MapPose` is one keyframe's pose ``T_map_base`` (its base frame in ``map``) with a 6x6
covariance in the ROS ``PoseWithCovariance`` convention: (x, y, z, rot_x, rot_y, rot_z), the position
error in the map frame and the rotation error about the map's fixed axes (``R = exp(dtheta) R_est``).

:func:`map_poses` gives every keyframe that has one its map pose:

* ``optimized``: the stored optimised pose (core/map/pose_table.py) with its marginal covariance;
* ``odometry``: a keyframe of the frame session without an optimised pose: its odometry pose *is* its
  map pose (the frame is that odometry frame). Its covariance is the **drift accumulated** along the
  session from its first keyframe, propagated to first order with the odometry noise model of the
  pose graph (:class:`OdometryDrift`, the same defaults as ``PoseGraphOptions``), floored at one
  odometry step's noise so it is never singular. Not zero: the frame is defined by odometry, but the
  places the map shows are only as well placed as the odometry that carried the robot there, and a
  relocalisation fix composed with a zero covariance would claim an accuracy the map does not have
  (NEES far above its bound after a long drive);
* keyframes of another robot or session without an optimised pose have **no** map pose: their odometry
  poses are in another odometry frame. Keyframes without any pose have none either.

Keys are keyframe identities ``(robot_id, session_id, keyframe_id)``, not map keys, so they survive
merging maps. Reading and writing a map directory (snapshot or live map) is :func:`read_optimized_poses`
/ :func:`write_optimized_poses`; the detector queues the poses of a live pose graph into the live map it
owns (core/detector_map.py, ``store_optimized_poses``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import shutil
import sqlite3
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import numpy.typing as npt

from vpr_ros.core.errors import InputError, MapStoreError
from vpr_ros.core.map import atomic_dir, live_map, live_map_dirs, pose_table
from vpr_ros.core.map.atomic_dir import fsync_dir, fsync_file
from vpr_ros.core.map.integrity import read_manifest, verify_file, write_manifest
from vpr_ros.core.map.live_checks import LOG, check_wal
from vpr_ros.core.map.ownership import DirLock
from vpr_ros.core.map.pose_table import covariance_problem, pose_problem
from vpr_ros.core.map.snapshot import DB, INDEX, SIDECARS, classify_dir
from vpr_ros.core.map.storable import copy_sidecars
from vpr_ros.core.types import Keyframe

__all__ = ["MapPose", "PoseKey", "SOURCES", "OdometryDrift", "pose_key", "frame_session", "map_poses",
           "odometry_covariances", "covariance_from_tangent", "read_optimized_poses", "write_optimized_poses",
           "optimized_poses_info", "store_in_log", "check_optimized"]

logger = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]
#: (robot_id, session_id, keyframe_id): a keyframe's identity across maps.
PoseKey = tuple[str, str, int]
SOURCES = ("odometry", "optimized")


def _skew(v: F64) -> F64:
    return np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])


@dataclasses.dataclass(frozen=True)
class MapPose:
    """A keyframe's pose in the map frame.

    T_map_base: (4, 4) float64, rigid (the keyframe's base frame in ``map``). covariance: (6, 6)
    float64, symmetric positive semi-definite, ROS order (x, y, z, rot_x, rot_y, rot_z): position in
    the map frame, rotation about the map's fixed axes. source: "odometry" or "optimized".
    """

    T_map_base: F64
    covariance: F64
    source: str

    def __post_init__(self) -> None:
        T = np.array(self.T_map_base, np.float64)
        cov = np.array(self.covariance, np.float64)
        if self.source not in SOURCES:
            raise InputError(f"map pose source {self.source!r}; choose one of {', '.join(SOURCES)}")
        problem = pose_problem(T) or covariance_problem(cov)
        if problem:
            raise InputError(f"map pose: {problem}")
        T.setflags(write=False)
        cov.setflags(write=False)
        object.__setattr__(self, "T_map_base", T)
        object.__setattr__(self, "covariance", cov)


@dataclasses.dataclass(frozen=True)
class OdometryDrift:
    """Odometry noise per step, a random walk: the same model and defaults as the pose graph's
    ``PoseGraphOptions`` (core/geometry/pose_graph.py; a test keeps them equal)."""

    odometry_sigma_m: float = 0.01            # floor of a step's position sigma, metres
    odometry_translation_drift: float = 0.05  # position sigma after 1 m, grows with sqrt(metres)
    odometry_sigma_deg: float = 0.05          # floor of a step's rotation sigma, degrees
    odometry_rotation_drift: float = 0.05     # rotation sigma per radian turned in the step
    odometry_heading_deg_per_m: float = 0.3   # rotation sigma after 1 m, degrees, grows with sqrt(metres)

    def step_covariance(self, step: F64) -> F64:
        """(6, 6) ROS-order covariance of one odometry step ``T_i^-1 T_{i+1}`` in the body frame of i."""
        dist = float(np.linalg.norm(step[:3, 3]))
        angle = float(np.arccos(np.clip((np.trace(step[:3, :3]) - 1) / 2, -1.0, 1.0)))
        var_m = self.odometry_sigma_m ** 2 + self.odometry_translation_drift ** 2 * dist
        var_r = (math.radians(self.odometry_sigma_deg) ** 2 + math.radians(self.odometry_heading_deg_per_m) ** 2 * dist
                 + (self.odometry_rotation_drift * angle) ** 2)
        return np.diag([var_m] * 3 + [var_r] * 3)

    def floor(self) -> F64:
        """(6, 6) covariance of the first keyframe: one standing step's noise (never singular)."""
        return self.step_covariance(np.eye(4))


def pose_key(kf: Keyframe) -> PoseKey:
    return (str(kf.robot_id), str(kf.session_id), int(kf.id))


def frame_session(keyframes: Iterable[Keyframe]) -> tuple[str, str] | None:
    """(robot_id, session_id) whose odometry frame is the map frame: that of the first keyframe."""
    first = next(iter(keyframes), None)
    return None if first is None else (str(first.robot_id), str(first.session_id))


def odometry_covariances(poses: F64, drift: OdometryDrift | None = None) -> F64:
    """(N, 6, 6) drift covariances of one stream's odometry poses ((N, 4, 4), stream order), ROS order.

    First-order propagation of ``T_{i+1} = T_i * step``: the position error grows by the rotation error
    times the step's lever arm, and each step adds its own noise rotated into the map frame.
    """
    drift = drift or OdometryDrift()
    poses = np.asarray(poses, np.float64)
    out = np.empty((len(poses), 6, 6))
    cov = drift.floor()
    for i, T in enumerate(poses):
        if i:
            prev = poses[i - 1]
            step = np.linalg.solve(prev, T)
            F = np.eye(6)
            F[:3, 3:] = -_skew(prev[:3, :3] @ step[:3, 3])
            G = np.zeros((6, 6))
            G[:3, :3], G[3:, 3:] = prev[:3, :3], T[:3, :3]
            cov = F @ cov @ F.T + G @ drift.step_covariance(step) @ G.T
        out[i] = (cov + cov.T) / 2
    return out


def covariance_from_tangent(T: F64, cov_tangent: F64) -> F64:
    """ROS-order map-frame covariance of ``T`` from a GTSAM Pose3 marginal (right perturbation
    ``T exp(xi)``, xi = (rot, trans) in the body frame)."""
    order = [3, 4, 5, 0, 1, 2]
    body = np.asarray(cov_tangent, np.float64)[np.ix_(order, order)]
    J = np.zeros((6, 6))
    J[:3, :3] = J[3:, 3:] = np.asarray(T, np.float64)[:3, :3]
    cov = J @ body @ J.T
    return (cov + cov.T) / 2


def map_poses(keyframes: Iterable[Keyframe], optimized: Mapping[PoseKey, MapPose], *,
              frame: tuple[str, str] | None = None, drift: OdometryDrift | None = None) -> dict[PoseKey, MapPose]:
    """Every keyframe's map pose (see the module docstring): optimised where stored, else the odometry
    pose for keyframes of the frame session (``frame``, default :func:`frame_session`), else absent."""
    keyframes = list(keyframes)
    frame = frame if frame is not None else frame_session(keyframes)
    stream = sorted((kf for kf in keyframes if kf.pose is not None and (kf.robot_id, kf.session_id) == frame),
                    key=lambda kf: int(kf.id))
    out: dict[PoseKey, MapPose] = {}
    if stream:
        poses = np.stack([np.asarray(kf.pose, np.float64) for kf in stream])
        for kf, T, cov in zip(stream, poses, odometry_covariances(poses, drift)):
            out[pose_key(kf)] = MapPose(T, cov, "odometry")
    present = {pose_key(kf) for kf in keyframes}
    out.update({k: p for k, p in optimized.items() if k in present})
    return out




# -- map directories ---------------------------------------------------------------------------------

def _connect_ro(root: Path) -> tuple[sqlite3.Connection, Path]:
    """A read-only connection to the map database at ``root`` that creates no file, and the file's path."""
    if live_map.is_live_map(root):
        return live_map._reader(root), root / LOG  # the live map's own read rule (no -wal/-shm created)
    if not (root / DB).is_file():
        raise MapStoreError(f"{root} is not a vpr_ros map (no {DB}); give the directory written by save_map")
    return sqlite3.connect((root / DB).absolute().as_uri() + "?mode=ro", uri=True), root / DB


def _idents(db: sqlite3.Connection) -> set[PoseKey]:
    return {(str(r), str(s), int(k)) for r, s, k in db.execute("SELECT robot_id, session_id, id FROM keyframes")}


def _read(path: str | Path, what: str, check_manifest: bool) -> Any:
    root = Path(path).expanduser()
    if check_manifest and not live_map.is_live_map(root) and (root / DB).is_file():
        verify_file(root, read_manifest(root), DB)
    try:
        db, where = _connect_ro(root)
        try:
            if what == "info":
                return pose_table.read_info(db, where)
            return pose_table.read_table(db, where, _idents(db))
        finally:
            db.close()
    except (sqlite3.Error, ValueError) as exc:
        raise MapStoreError(f"map {root}: its database is damaged ({exc}); re-create it or load another map") from None


def read_optimized_poses(map_dir: str | Path, *, check_manifest: bool = True) -> dict[PoseKey, MapPose]:
    """The optimised poses stored in the map at ``map_dir`` (snapshot or live; {} when it has none).

    Every row is checked (core/map/pose_table.py); damage raises MapStoreError naming the file and row.
    ``check_manifest``: verify ``map.sqlite`` against the manifest first (skip only right after a load
    that did). Changes nothing on disk.
    """
    return {k: MapPose(T, C, "optimized") for k, (T, C) in _read(map_dir, "rows", check_manifest).items()}


def optimized_poses_info(map_dir: str | Path) -> dict[str, Any] | None:
    """version, count, source_note and written_ns of the map's optimised poses; None when it has none."""
    return _read(map_dir, "info", False)


def check_optimized(poses: Mapping[PoseKey, MapPose]) -> dict[PoseKey, tuple[F64, F64]]:
    """InputError unless every value is a MapPose with source "optimized"; returns the table rows."""
    rows = {}
    for key, pose in poses.items():
        if not isinstance(pose, MapPose) or pose.source != "optimized":
            raise InputError(f"keyframe {key}: only MapPose(source='optimized') values are stored as optimised "
                             "poses (odometry poses are already in the keyframes)")
        rows[(str(key[0]), str(key[1]), int(key[2]))] = (pose.T_map_base, pose.covariance)
    return rows


def _write_db(db: sqlite3.Connection, where: Path, rows: Mapping[PoseKey, tuple[F64, F64]], note: str) -> None:
    """Check that every row names a keyframe of the map, then replace the table (in one transaction)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        missing = sorted(set(rows) - _idents(db))
        if missing:
            raise MapStoreError(f"map {where.parent}: {len(missing)} optimised poses name keyframes the map does not "
                                f"hold (first: {missing[0]}); nothing was written — optimise this map's keyframes")
        pose_table.write_table(db, rows, note)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def store_in_log(log: live_map.MapLog, poses: Mapping[PoseKey, MapPose], source_note: str) -> int:
    """Replace the optimised poses of the live map ``log`` that this process has open for writing (it owns
    the map); durable when this returns. Poses of keyframes the map does not hold (another robot's, not
    stored) are left out, with a warning. Returns the count stored."""
    rows = check_optimized(poses)
    missing = [k for k in rows if log.key_of(*k) is None]
    if missing:
        logger.warning("map %s: %d optimised poses name keyframes the map does not hold (first: %s); stored without "
                       "them", log.root, len(missing), missing[0])
        rows = {k: v for k, v in rows.items() if log.key_of(*k) is not None}
    log.write_tables(lambda db: pose_table.write_table(db, rows, source_note))
    return len(rows)


def _copy_snapshot(src: Path, tmp: Path) -> list[str]:
    """Copy the snapshot map ``src`` into ``tmp`` file by file, each verified against the manifest."""
    if os.path.lexists(src / (DB + "-journal")):
        raise MapStoreError(f"map {src}: {DB}-journal exists (a write was interrupted); load the map once "
                            "(vpr-ros map verify, replay --map-load) so SQLite recovers it, then try again")
    manifest = read_manifest(src)
    names = list(manifest) if manifest is not None else [DB] + ([INDEX] if (src / INDEX).is_file() else []) + [
        f"local/{n}" for n in (sorted(os.listdir(src / "local")) if (src / "local").is_dir() else [])]
    (tmp / "local").mkdir()
    for name in names:
        verify_file(src, manifest, name)
        shutil.copyfile(src / name, tmp / name)
        fsync_file(tmp / name)
    fsync_dir(tmp / "local")
    copy_sidecars(src, SIDECARS, tmp)
    return names


def write_optimized_poses(map_dir: str | Path, poses: Mapping[PoseKey, MapPose], *, source_note: str,
                          out: str | Path | None = None) -> Path:
    """Store ``poses`` (each ``source="optimized"``, naming keyframes of the map) as the map's optimised
    poses, replacing any stored before; returns the map directory written.

    In place (``out`` None): a live map gets them in one SQLite transaction; a snapshot map is rewritten
    crash-safely (a verified copy with the table and a new manifest, swapped in by core/map/atomic_dir.py),
    so a crash leaves the old or the new map. ``out``: write a copy of the map with the poses there
    instead (a missing path, an empty directory or a map; ``map_dir`` is not changed). A map another
    writer owns (core/map/ownership.py) is refused with the ownership message and nothing is written.
    Nothing else of the map changes: keyframes, their odometry poses and loops stay as they are.
    """
    root = Path(map_dir).expanduser().absolute()
    rows = check_optimized(poses)
    live = live_map.is_live_map(root)
    if not live and not (root / DB).is_file():
        raise MapStoreError(f"{map_dir} is not a vpr_ros map (no {DB}); give the directory written by save_map")
    if live and out is None:
        with DirLock(root):  # refuses while a node appends to it
            check_wal(root)
            try:
                db = live_map._connect(root / LOG)
                try:
                    _write_db(db, root / LOG, rows, source_note)
                finally:
                    db.close()
            except (sqlite3.Error, OSError) as exc:
                raise MapStoreError(f"cannot write optimised poses into map {root}: {exc}; the map is unchanged (check "
                                    "the disk has space)") from exc
        return root

    def write(tmp: Path) -> None:
        if live:
            log = live_map.MapLog(root)
            try:
                live_map_dirs._copy_into(log, tmp)
            finally:
                log.close()
            db = live_map._connect(tmp / LOG)
        else:
            names = _copy_snapshot(root, tmp)
            db = sqlite3.connect(tmp / DB, isolation_level=None)
            db.execute("PRAGMA synchronous=FULL")
        try:
            _write_db(db, tmp / (LOG if live else DB), rows, source_note)
            if live:
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            db.close()
        fsync_file(tmp / (LOG if live else DB))
        if not live:
            write_manifest(tmp, names)  # last, over the changed map.sqlite

    try:
        return atomic_dir.replace_dir(root if out is None else Path(out).expanduser(), write, classify_dir)
    except MapStoreError:
        raise
    except (OSError, sqlite3.Error) as exc:
        raise MapStoreError(f"cannot write optimised poses of map {root}: {exc}; check the disk has space (the map "
                            "is unchanged)") from exc
