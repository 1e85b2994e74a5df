"""Our loop closures as the edges SLAM backends take (docs/backends.md): body frame, direction,
covariance order and information matrix. ROS-free; the bridges in ``vpr_ros.nodes.bridges`` convert
messages to and from what this module takes and returns.

Our convention (vpr_ros_msgs/LoopClosure): ``T_match_query`` is the pose of the query body in the
match body frame, a (4, 4) transform; its covariance is (6, 6) over (x, y, z, rx, ry, rz) of the
right perturbation ``T = T_est * exp(delta)``, delta in the query body frame (GTSAM's Pose3
convention with the translation block first).

What the backends take:

- RTAB-Map ``Link``: from = query node, to = match node, transform = T_query_match, information =
  the inverse covariance of that transform's right perturbation (in the match frame), order x, y,
  z, roll, pitch, yaw (to first order roll/pitch/yaw are the rotation vector's components).
- Swarm-SLAM (cslam) ``BetweenFactor(kf0, kf1, T)``: kf0 = match, kf1 = query, T = T_match_query;
  the covariance is ignored (fixed sigmas).
- Hydra ``PoseGraphEdge``: pose = to_T_from with from = query, to = match, i.e. T_match_query;
  covariance row-major in the order the consumer wants (:func:`reorder_covariance`).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import numpy.typing as npt

from vpr_ros.core.geometry.pose_covariance import adjoint, transform_covariance

__all__ = ["KeyframeRef", "BackendLoop", "change_body_frame", "invert_edge", "compose_edge",
           "reorder_covariance", "information_matrix", "COVARIANCE_ORDERS", "transform_from_xyz_quat",
           "is_rigid"]

F64 = npt.NDArray[np.float64]

#: Row/column orders a 6x6 covariance can be written in: ROS (translation first, as in
#: geometry_msgs/PoseWithCovariance and RTAB-Map's information) or GTSAM Pose3 (rotation first).
COVARIANCE_ORDERS = ("translation_first", "rotation_first")


@dataclasses.dataclass(frozen=True)
class KeyframeRef:
    """One keyframe as a loop closure names it."""

    robot_id: str
    session_id: str
    keyframe_id: int
    stamp_ns: int


@dataclasses.dataclass(frozen=True)
class BackendLoop:
    """A loop closure as the bridges receive it. ``T_match_query`` (4, 4) and ``covariance`` (6, 6)
    are None when the message has no valid relative pose; ``scale_known`` is False for monocular
    poses (translation is a direction only)."""

    query: KeyframeRef
    match: KeyframeRef
    T_match_query: F64 | None = None
    covariance: F64 | None = None
    scale_known: bool = False

    @property
    def metric(self) -> bool:
        """True when the loop carries a pose a metric backend can use."""
        return self.T_match_query is not None and self.scale_known

    @property
    def same_stream(self) -> bool:
        """Both keyframes from the same robot and session (an intra-robot loop of one run)."""
        return (self.query.robot_id, self.query.session_id) == (self.match.robot_id, self.match.session_id)


def is_rigid(T: npt.ArrayLike, tol: float = 1e-6) -> bool:
    """A finite (4, 4) transform with a proper rotation (R^T R = I, det R = 1)."""
    T = np.asarray(T, np.float64)
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        return False
    R = T[:3, :3]
    return bool(np.allclose(R.T @ R, np.eye(3), atol=tol) and abs(np.linalg.det(R) - 1.0) < tol
                and np.allclose(T[3], [0.0, 0.0, 0.0, 1.0]))


def transform_from_xyz_quat(values: npt.ArrayLike) -> F64:
    """(4, 4) transform from [x, y, z, qx, qy, qz, qw]; ValueError naming the problem otherwise."""
    v = np.asarray(values, np.float64).reshape(-1)
    if v.size != 7 or not np.all(np.isfinite(v)):
        raise ValueError(f"expected 7 finite numbers [x, y, z, qx, qy, qz, qw], got {v.tolist()}")
    q = v[3:]
    norm = float(np.linalg.norm(q))
    if norm < 1e-9:
        raise ValueError(f"quaternion {q.tolist()} (x, y, z, w) has no direction")
    x, y, z, w = q / norm
    T = np.eye(4)
    T[:3, :3] = [[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                 [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                 [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]]
    T[:3, 3] = v[:3]
    return T


def change_body_frame(T_match_query: npt.ArrayLike, covariance: npt.ArrayLike | None,
                      base_T_body: npt.ArrayLike) -> tuple[F64, F64 | None]:
    """A loop between two bodies (e.g. the camera) as a loop between two bases rigidly attached to
    them: ``T_b = X T X^-1`` with ``X = base_T_body``, covariance ``Ad(X) C Ad(X)^T``."""
    X = np.asarray(base_T_body, np.float64)
    T = X @ np.asarray(T_match_query, np.float64) @ np.linalg.inv(X)
    cov = None if covariance is None else transform_covariance(covariance, X)
    return T, cov


def invert_edge(T_a_b: npt.ArrayLike, covariance: npt.ArrayLike | None) -> tuple[F64, F64 | None]:
    """The reverse edge ``T_b_a = T_a_b^-1`` and the covariance of its right perturbation (now in
    frame a): ``(T e^d)^-1 = T^-1 e^(-Ad(T) d)``, so ``C' = Ad(T_a_b) C Ad(T_a_b)^T``."""
    T = np.asarray(T_a_b, np.float64)
    cov = None if covariance is None else transform_covariance(covariance, T)
    return np.linalg.inv(T), cov


def compose_edge(A: npt.ArrayLike, T: npt.ArrayLike, covariance: npt.ArrayLike | None,
                 B: npt.ArrayLike) -> tuple[F64, F64 | None]:
    """``A T B`` with A and B exact (e.g. the odometry over a stamp gap): the right perturbation d of
    T becomes ``Ad(B^-1) d`` of the product, so ``C' = Ad(B^-1) C Ad(B^-1)^T``."""
    A, T, B = (np.asarray(m, np.float64) for m in (A, T, B))
    if covariance is None:
        return A @ T @ B, None
    ad = adjoint(np.linalg.inv(B))
    cov = ad @ np.asarray(covariance, np.float64) @ ad.T
    return A @ T @ B, 0.5 * (cov + cov.T)


def reorder_covariance(covariance: npt.ArrayLike, order: str) -> F64:
    """Our (translation-first) 6x6 covariance in ``order`` (one of :data:`COVARIANCE_ORDERS`)."""
    cov = np.asarray(covariance, np.float64).reshape(6, 6)
    if order == "translation_first":
        return cov.copy()
    if order == "rotation_first":
        idx = [3, 4, 5, 0, 1, 2]
        return cov[np.ix_(idx, idx)]
    raise ValueError(f"covariance order {order!r} is not one of {', '.join(COVARIANCE_ORDERS)}")


def information_matrix(covariance: npt.ArrayLike, min_sigma_m: float = 1e-3,
                       min_sigma_rad: float = 1e-3) -> tuple[F64, bool]:
    """Inverse of a (6, 6) translation-first covariance, and whether it had to be clamped.

    A covariance that is singular, indefinite or smaller than the floors (an over-confident loop
    would pin the backend's graph) is clamped: its eigenvalues are raised to at least the smaller of
    the two floor variances, and each diagonal variance to at least its own floor, before inverting.
    Non-finite input raises ValueError."""
    cov = np.asarray(covariance, np.float64).reshape(6, 6)
    if not np.all(np.isfinite(cov)):
        raise ValueError("covariance contains NaN or inf")
    cov = 0.5 * (cov + cov.T)
    floors = np.array([min_sigma_m ** 2] * 3 + [min_sigma_rad ** 2] * 3)
    w, V = np.linalg.eigh(cov)
    clamped = bool(np.any(w < floors.min()))
    if clamped:
        cov = (V * np.maximum(w, floors.min())) @ V.T
    low = np.diag(cov) < floors
    if np.any(low):
        clamped = True
        cov = cov + np.diag(np.where(low, floors - np.diag(cov), 0.0))
    info = np.linalg.inv(cov)
    return 0.5 * (info + info.T), clamped
