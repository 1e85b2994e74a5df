"""Checking one ``keyframes`` row of a live map (core/map_log.py) and turning it into a Keyframe.

Every field is checked before use, so a damaged or crafted ``log.sqlite`` gives a MapStoreError that
names the file and row, never a numpy or type error deep in the detector.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vpr_ros.core.errors import MapStoreError
from vpr_ros.core.types import Keyframe

__all__ = ["keyframe_from_row"]


def keyframe_from_row(db_path: Path, global_dim: int, local_shape: tuple[int, ...] | None, i: int,
                      row: tuple) -> Keyframe:
    """Row ``i`` (key, id, robot_id, session_id, stamp_ns, pose, global, segment, offset) -> Keyframe
    (local features stay on disk)."""
    key, kid, robot, session, stamp, pose, glob, segment, _ = row

    def bad(what: str) -> MapStoreError:
        return MapStoreError(f"map {db_path.parent}: {db_path.name} keyframe row {i} {what}; the map is damaged — "
                             "re-create it or load another")

    if key != i:
        raise bad(f"has key {key} (keys must run 0..n-1)")
    if not (isinstance(kid, int) and isinstance(robot, str) and isinstance(session, str)
            and isinstance(stamp, int)):
        raise bad("has a field of the wrong type")
    if not isinstance(glob, bytes) or len(glob) != 4 * global_dim:
        raise bad(f"has a descriptor that is not {global_dim} float32")
    g = np.frombuffer(glob, "<f4").astype(np.float32)
    if not np.isfinite(g).all() or not np.any(g):
        raise bad("has a NaN, inf or all-zero descriptor")
    if pose is not None:
        if not isinstance(pose, bytes) or len(pose) != 128:
            raise bad("has a pose that is not 16 float64")
        pose = np.frombuffer(pose, "<f8").reshape(4, 4).astype(np.float64)
        if not np.isfinite(pose).all():
            raise bad("has a NaN or inf pose")
    if segment is not None and local_shape is None:
        raise bad("has local features but the meta has no local_shape")
    return Keyframe(id=kid, stamp_ns=stamp, robot_id=robot, session_id=session, global_=g, pose=pose)
