"""Errors and NEES of a loop's relative pose against the exact ground truth, in the message's convention.

LoopClosure.msg: the covariance is row-major 6x6 over delta = (x, y, z, rot_x, rot_y, rot_z) of the
perturbation ``T_true = T_est * exp(delta)`` in the query body frame, translation first.

- **Metric (6 DoF)**: ``delta = Log(T_est^-1 T_true)`` with the SE(3) logarithm (rho = V(phi)^-1 t,
  phi = log R; GTSAM's ``Pose3::Logmap`` reordered translation first). The estimator's covariance
  comes from a first-order chart (translation added, not through V); the two differ at second order
  only (|phi| |t| / 2: ~1e-6 m for a 0.05 deg, 5 mm error). NEES = delta^T Sigma^-1 delta ~ chi^2(6).
- **Single camera (5 DoF: rotation + direction)**: the scale is the gauge, so the translation along
  the estimated direction u = R_est^T t_est / |t_est| (query frame) is dropped. With b1, b2 an
  orthonormal basis perpendicular to u, the direction error is the tangent vector on the unit
  sphere: angle(u, d) * (d - (u.d) u) / |d - (u.d) u| with d = R_est^T t_true / |t_true|; for a unit
  translation this is delta's translation part perpendicular to u to first order. e5 = (b1.e_dir,
  b2.e_dir, phi), Sigma5 = P^T Sigma P with P = [[b1 b2 0], [0 0 I3]] (the message's 1e6 variance
  along u is exactly projected out), NEES5 = e5^T Sigma5^-1 e5 ~ chi^2(5).

The 95 % bounds are chi^2 quantiles (:data:`CHI2_95`).
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import cv2
import numpy as np
import numpy.typing as npt

from vpr_ros.core.eval.relocalization import rotation_error_deg

__all__ = ["CHI2_95", "so3_log", "se3_log", "se3_exp", "pose_error_6", "nees_6", "direction_basis",
           "error_5", "nees_5", "apply_error_5", "rotation_error_deg", "direction_error_deg", "nees_summary"]

F64 = npt.NDArray[np.float64]
CHI2_95 = {5: 11.070497693516351, 6: 12.591587243743977}  # scipy.stats.chi2.ppf(0.95, dof)


def _skew(v: F64) -> F64:
    return np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])


def so3_log(R: npt.ArrayLike) -> F64:
    return cv2.Rodrigues(np.asarray(R, np.float64))[0].reshape(3)


def _V(phi: F64) -> F64:
    th = float(np.linalg.norm(phi))
    W = _skew(phi)
    if th < 1e-8:
        return np.eye(3) + 0.5 * W
    return np.eye(3) + (1 - math.cos(th)) / th ** 2 * W + (th - math.sin(th)) / th ** 3 * (W @ W)


def se3_log(T: npt.ArrayLike) -> F64:
    """(rho, phi), translation first, with T = exp(rho, phi) (the full SE(3) exponential)."""
    T = np.asarray(T, np.float64)
    phi = so3_log(T[:3, :3])
    return np.concatenate([np.linalg.solve(_V(phi), T[:3, 3]), phi])


def se3_exp(delta: npt.ArrayLike) -> F64:
    d = np.asarray(delta, np.float64).reshape(6)
    T = np.eye(4)
    T[:3, :3] = cv2.Rodrigues(d[3:])[0]
    T[:3, 3] = _V(d[3:]) @ d[:3]
    return T


def pose_error_6(T_est: npt.ArrayLike, T_true: npt.ArrayLike) -> F64:
    """delta with T_true = T_est * exp(delta) (query frame, translation first)."""
    return se3_log(np.linalg.inv(np.asarray(T_est, np.float64)) @ np.asarray(T_true, np.float64))


def nees_6(T_est: npt.ArrayLike, T_true: npt.ArrayLike, cov: npt.ArrayLike) -> float:
    e = pose_error_6(T_est, T_true)
    return float(e @ np.linalg.solve(np.asarray(cov, np.float64).reshape(6, 6), e))


def direction_basis(T_est: npt.ArrayLike) -> tuple[F64, F64, F64]:
    """u (the estimated direction in the query frame) and b1, b2 perpendicular to it (deterministic)."""
    T = np.asarray(T_est, np.float64)
    u = T[:3, :3].T @ T[:3, 3]
    u /= np.linalg.norm(u)
    axis = np.eye(3)[int(np.argmin(np.abs(u)))]
    b1 = np.cross(u, axis)
    b1 /= np.linalg.norm(b1)
    return u, b1, np.cross(u, b1)


def error_5(T_est: npt.ArrayLike, T_true: npt.ArrayLike) -> F64:
    """e5 = (direction error on b1, b2 in rad, rotation error phi) of a scale-free pose."""
    T_est, T_true = np.asarray(T_est, np.float64), np.asarray(T_true, np.float64)
    u, b1, b2 = direction_basis(T_est)
    d = T_est[:3, :3].T @ T_true[:3, 3]
    d /= np.linalg.norm(d)
    w = d - (u @ d) * u
    nw = float(np.linalg.norm(w))
    e_dir = np.zeros(3) if nw < 1e-15 else math.atan2(nw, float(u @ d)) * w / nw
    phi = so3_log(T_est[:3, :3].T @ T_true[:3, :3])
    return np.array([b1 @ e_dir, b2 @ e_dir, *phi])


def apply_error_5(T_est: npt.ArrayLike, e5: npt.ArrayLike) -> F64:
    """The pose (unit translation) whose :func:`error_5` against ``T_est`` is ``e5`` (tests)."""
    T_est = np.asarray(T_est, np.float64)
    e5 = np.asarray(e5, np.float64).reshape(5)
    u, b1, b2 = direction_basis(T_est)
    v = e5[0] * b1 + e5[1] * b2
    th = float(np.linalg.norm(v))
    d = u if th == 0 else math.cos(th) * u + math.sin(th) * v / th
    T = np.eye(4)
    T[:3, :3] = T_est[:3, :3] @ cv2.Rodrigues(e5[2:])[0]
    T[:3, 3] = T_est[:3, :3] @ d
    return T


def nees_5(T_est: npt.ArrayLike, T_true: npt.ArrayLike, cov: npt.ArrayLike) -> float:
    _, b1, b2 = direction_basis(T_est)
    P = np.zeros((6, 5))
    P[:3, 0], P[:3, 1], P[3:, 2:] = b1, b2, np.eye(3)
    C = np.asarray(cov, np.float64).reshape(6, 6)
    e = error_5(T_est, T_true)
    return float(e @ np.linalg.solve(P.T @ C @ P, e))


def direction_error_deg(T_est: npt.ArrayLike, T_true: npt.ArrayLike) -> float:
    a, b = np.asarray(T_est, np.float64)[:3, 3], np.asarray(T_true, np.float64)[:3, 3]
    return math.degrees(math.acos(float(np.clip(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)), -1, 1))))


def nees_summary(values: Iterable[float], dof: int) -> dict[str, Any]:
    """n, mean, median, share inside the 95 % chi-square bound (expected: mean = dof, share 0.95)."""
    v = np.asarray(list(values), np.float64)
    if not len(v):
        return {"n": 0, "dof": dof, "mean": None, "median": None, "inside_95": None, "bound_95": CHI2_95[dof]}
    return {"n": int(len(v)), "dof": dof, "mean": float(v.mean()), "median": float(np.median(v)),
            "inside_95": float(np.mean(v <= CHI2_95[dof])), "bound_95": CHI2_95[dof]}
