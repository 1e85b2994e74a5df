"""The robot's pose in a map from a matched keyframe: composition, covariances, base <- camera.

Two covariance conventions meet here (both 6x6, translation first):

* **right** (``LoopClosure.covariance``, ``core/geometry/pose_covariance``): the true pose is
  T = T_est * exp(delta), delta = (rho, phi) in the posed body's own frame.
* **ROS** (``geometry_msgs/PoseWithCovariance``, ``MapPose.covariance``, ``Fix.covariance``): the
  variables are x, y, z, rot_x, rot_y, rot_z with the position error in the parent (map) frame and
  the rotation error about the parent's fixed axes: p = p_est + dp, R = Exp(dtheta) R_est. To first
  order a right perturbation gives dp = R rho and dtheta = R phi, so
  cov_ros = diag(R, R) cov_right diag(R, R)^T (:func:`ros_from_right`).

Composition (:func:`compose_map_pose`): T_map_query = T_map_match * T_match_query with the map pose
in the ROS convention (dp_m, dtheta_m) and the relative pose in the right convention (rho, phi):

    dp_q     = dp_m - [R_m t_mq]x dtheta_m + R_q rho
    dtheta_q = dtheta_m + R_q phi

(R_m, R_q the rotations of T_map_match and T_map_query, t_mq the translation of T_match_query), so
cov_q = J_m cov_m J_m^T + J_r cov_r J_r^T with J_m = [[I, -[R_m t_mq]x], [0, I]] and
J_r = diag(R_q, R_q); the two are independent measurements (the map from the mapping session, the
relative pose from this image pair). Tests check both by sampling.

Frames (:func:`camera_to_base`, :func:`change_child`): a camera-frame pose between two camera frames
(a relative pose, or a trajectory whose world frame is the first camera frame) becomes a base-frame
pose by conjugation T_b = T_bc T_c T_bc^-1 and its right covariance transforms with the adjoint
Ad(T_bc). Re-expressing the posed frame only (T_a_b -> T_a_b T_b_c) is :func:`change_child`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import numpy.typing as npt
from scipy.spatial.transform import Rotation

from vpr_ros.core.config import FramesConfig
from vpr_ros.core.geometry.pose_covariance import adjoint, skew

__all__ = ["pose_from_xyz_quat", "xyz_quat", "base_from_camera_matrix", "ros_from_right", "right_from_ros",
           "compose_map_pose", "change_child", "camera_to_base", "pose_difference", "mahalanobis2", "sigmas"]

F64 = npt.NDArray[np.float64]


def pose_from_xyz_quat(values: Sequence[float]) -> F64:
    """(4, 4) float64 from ``(x, y, z, qx, qy, qz, qw)`` (quaternion normalised)."""
    v = np.asarray(values, np.float64).reshape(7)
    T = np.eye(4)
    T[:3, :3] = Rotation.from_quat(v[3:] / np.linalg.norm(v[3:])).as_matrix()
    T[:3, 3] = v[:3]
    return T


def xyz_quat(T: npt.ArrayLike) -> tuple[F64, F64]:
    """Position (3,) and quaternion (4,) x y z w (w >= 0) of a (4, 4) pose."""
    T = np.asarray(T, np.float64)
    q = Rotation.from_matrix(T[:3, :3]).as_quat()
    return T[:3, 3].copy(), (q if q[3] >= 0 else -q)


def base_from_camera_matrix(frames: FramesConfig) -> F64:
    """T_base_camera (4, 4) from ``frames.base_from_camera``."""
    return pose_from_xyz_quat(frames.base_from_camera_values)


def _rot6(R: F64) -> F64:
    out = np.zeros((6, 6))
    out[:3, :3] = R
    out[3:, 3:] = R
    return out


def _sym(c: F64) -> F64:
    return 0.5 * (c + c.T)


def ros_from_right(T: npt.ArrayLike, cov_right: npt.ArrayLike) -> F64:
    """ROS-convention covariance of pose T (parent frame position, fixed-axis rotation) from its
    right-perturbation covariance (the posed frame's own axes)."""
    J = _rot6(np.asarray(T, np.float64)[:3, :3])
    return _sym(J @ np.asarray(cov_right, np.float64) @ J.T)


def right_from_ros(T: npt.ArrayLike, cov_ros: npt.ArrayLike) -> F64:
    """The inverse of :func:`ros_from_right`."""
    J = _rot6(np.asarray(T, np.float64)[:3, :3].T)
    return _sym(J @ np.asarray(cov_ros, np.float64) @ J.T)


def compose_map_pose(T_map_match: npt.ArrayLike, cov_map_match: npt.ArrayLike, T_match_query: npt.ArrayLike,
                     cov_match_query: npt.ArrayLike) -> tuple[F64, F64]:
    """T_map_query (4, 4) and its ROS-convention covariance (6, 6).

    cov_map_match: ROS convention (``MapPose.covariance``); cov_match_query: right convention in the
    query frame (``LoopClosure.covariance``). See the module docstring for the Jacobians.
    """
    Tm = np.asarray(T_map_match, np.float64)
    Tr = np.asarray(T_match_query, np.float64)
    Tq = Tm @ Tr
    Jm = np.eye(6)
    Jm[:3, 3:] = -skew(Tm[:3, :3] @ Tr[:3, 3])
    Jr = _rot6(Tq[:3, :3])
    cov = Jm @ np.asarray(cov_map_match, np.float64) @ Jm.T + Jr @ np.asarray(cov_match_query, np.float64) @ Jr.T
    return Tq, _sym(cov)


def change_child(T_a_b: npt.ArrayLike, cov_right: npt.ArrayLike, T_b_c: npt.ArrayLike) -> tuple[F64, F64]:
    """T_a_c = T_a_b T_b_c and its right covariance (in frame c): T_a_b exp(d) T_b_c = T_a_c exp(Ad(T_c_b) d)."""
    T_b_c = np.asarray(T_b_c, np.float64)
    ad = adjoint(np.linalg.inv(T_b_c))
    return np.asarray(T_a_b, np.float64) @ T_b_c, _sym(ad @ np.asarray(cov_right, np.float64) @ ad.T)


def camera_to_base(T_cam: npt.ArrayLike, cov_right: npt.ArrayLike | None,
                   T_base_cam: npt.ArrayLike) -> tuple[F64, F64 | None]:
    """A pose between camera frames as a pose between the base frames rigidly attached to them:
    T_b = T_bc T_c T_bc^-1; its right covariance Ad(T_bc) cov Ad(T_bc)^T (None stays None)."""
    T_bc = np.asarray(T_base_cam, np.float64)
    T = T_bc @ np.asarray(T_cam, np.float64) @ np.linalg.inv(T_bc)
    if cov_right is None:
        return T, None
    ad = adjoint(T_bc)
    return T, _sym(ad @ np.asarray(cov_right, np.float64) @ ad.T)


def pose_difference(T_a: npt.ArrayLike, T_b: npt.ArrayLike) -> F64:
    """(6,) difference of two poses of the same frame in the ROS convention's variables:
    (p_a - p_b, rotvec(R_a R_b^T)), position in the parent frame, rotation about its fixed axes."""
    A, B = np.asarray(T_a, np.float64), np.asarray(T_b, np.float64)
    return np.concatenate([A[:3, 3] - B[:3, 3], Rotation.from_matrix(A[:3, :3] @ B[:3, :3].T).as_rotvec()])


def mahalanobis2(delta: npt.ArrayLike, cov: npt.ArrayLike) -> float:
    """delta^T cov^+ delta (pseudo-inverse: a singular covariance constrains only what it can)."""
    d = np.asarray(delta, np.float64).reshape(-1)
    return float(d @ np.linalg.pinv(np.asarray(cov, np.float64), rcond=1e-12, hermitian=True) @ d)


def sigmas(cov: npt.ArrayLike) -> tuple[float, float]:
    """Largest position standard deviation (m) and largest rotation standard deviation (rad) of a
    6x6 covariance: square roots of the largest eigenvalues of its 3x3 diagonal blocks."""
    c = np.asarray(cov, np.float64)
    pos = float(np.linalg.eigvalsh(_sym(c[:3, :3]))[-1])
    rot = float(np.linalg.eigvalsh(_sym(c[3:, 3:]))[-1])
    return float(np.sqrt(max(pos, 0.0))), float(np.sqrt(max(rot, 0.0)))
