"""Exports a SLAM backend can read: g2o pose graphs and TUM trajectories.

g2o (the format of g2o, GTSAM ``readG2o``, Ceres' pose_graph_3d examples)::

    VERTEX_SE3:QUAT id x y z qx qy qz qw
    EDGE_SE3:QUAT id_from id_to x y z qx qy qz qw I11 I12 .. I16 I22 .. I66

The edge is the transform ``T_from^-1 T_to``; the 21 numbers are the upper triangle (row-major) of
its 6x6 information matrix (inverse covariance) in the order [x, y, z, r1, r2, r3] -- the ROS
covariance order, which is also what GTSAM's reader expects before it reorders to its own. What the
rotation error r is depends on the reader (``information``, :data:`G2O_INFORMATION`):

* ``"gtsam"`` (default): the rotation vector of the error (GTSAM ``readG2o`` and its Pose3
  ``BetweenFactor``; Ceres' pose_graph_3d, whose residual is ``2 * q.vec()``): information = C^-1.
* ``"g2o"``: g2o's own ``EdgeSE3``, whose error is the translation and the *vector part of the unit
  quaternion* of the error (w >= 0), about half the rotation vector: r = D phi with D = diag(1, 1, 1,
  1/2, 1/2, 1/2), so information = (D C D)^-1 = D^-1 C^-1 D^-1 (rotation block x4, cross blocks x2).

TUM (``evo``, the TUM RGB-D tools)::

    timestamp tx ty tz qx qy qz qw      (seconds, one pose per line)
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import numpy.typing as npt

from vpr_ros.core.errors import InputError
from vpr_ros.io.poses import matrix_to_pose

__all__ = ["G2oEdge", "G2O_INFORMATION", "g2o_information", "write_g2o", "write_tum"]

F64 = npt.NDArray[np.float64]
#: (id_from, id_to, T_from_to (4, 4), covariance (6, 6) in [x, y, z, rx, ry, rz] order)
G2oEdge = tuple[int, int, F64, F64]
#: Readers of a g2o file's information matrix (module docstring): rotation vector or quaternion vector part.
G2O_INFORMATION = ("gtsam", "g2o")


def _pose_fields(matrix: F64) -> str:
    (x, y, z), (qx, qy, qz, qw) = matrix_to_pose(np.asarray(matrix, np.float64))
    return " ".join(f"{v:.9g}" for v in (x, y, z, qx, qy, qz, qw))


def g2o_information(covariance: npt.ArrayLike, information: str = "gtsam") -> F64:
    """(6, 6) information matrix of an edge whose covariance (rotation-vector error, [x, y, z, rx, ry,
    rz]) is ``covariance``, for the reader ``information`` (one of :data:`G2O_INFORMATION`)."""
    if information not in G2O_INFORMATION:
        raise InputError(f"g2o information {information!r}; choose one of {', '.join(G2O_INFORMATION)}")
    cov = np.asarray(covariance, np.float64)
    if cov.shape != (6, 6) or not np.all(np.isfinite(cov)):
        raise InputError("g2o edge covariance must be a finite (6, 6) matrix")
    try:
        info = np.linalg.inv(cov)
    except np.linalg.LinAlgError as exc:
        raise InputError("g2o edge covariance is singular; give every dof a positive variance") from exc
    if information == "g2o":  # error (t, q.vec) with q.vec ~ phi / 2: information D^-1 C^-1 D^-1
        scale = np.array([1.0, 1.0, 1.0, 2.0, 2.0, 2.0])
        info = info * np.outer(scale, scale)
    return (info + info.T) / 2


def _information_fields(covariance: F64, information: str) -> str:
    info = g2o_information(covariance, information)
    return " ".join(f"{info[r, c]:.9g}" for r in range(6) for c in range(r, 6))


def write_g2o(path: str | Path, poses: Sequence[F64] | F64, edges: Iterable[G2oEdge],
              information: str = "gtsam") -> Path:
    """Write vertices 0..N-1 at ``poses`` ((N, 4, 4) world_T_body) and ``edges``, the information in the
    convention of the reader ``information`` (:data:`G2O_INFORMATION`); returns the path."""
    path = Path(path)
    lines = [f"VERTEX_SE3:QUAT {i} {_pose_fields(p)}" for i, p in enumerate(poses)]
    for i, j, rel, cov in edges:
        lines.append(f"EDGE_SE3:QUAT {int(i)} {int(j)} {_pose_fields(rel)} {_information_fields(cov, information)}")
    path.write_text("\n".join(lines) + "\n")
    return path


def write_tum(path: str | Path, stamps_ns: Sequence[int], poses: Sequence[F64] | F64) -> Path:
    """Write a TUM trajectory (stamps in ns, (N, 4, 4) world_T_body); returns the path."""
    if len(stamps_ns) != len(poses):
        raise InputError(f"{len(stamps_ns)} stamps for {len(poses)} poses; give one stamp per pose")
    path = Path(path)
    # ns -> s with all 9 decimals so stamps survive the text round trip exactly.
    rows = [f"{s // 1_000_000_000}.{s % 1_000_000_000:09d} {_pose_fields(p)}"
            for s, p in zip((int(s) for s in stamps_ns), poses)]
    path.write_text("\n".join(rows) + "\n")
    return path
