"""Covariance of an estimated relative pose from its residuals at the solution.

Convention (the message's 6x6 layout, documented in LoopClosure.msg and docs/geometry.md): the
true pose is T = T_est * exp(delta) with delta = (x, y, z, rot_x, rot_y, rot_z), a perturbation in
the frame of the posed body (the query), translation first as in geometry_msgs/PoseWithCovariance.
GTSAM's Pose3 uses the same right perturbation with rotation first: swap the 3x3 blocks.

The estimate is sigma^2 (J^T J)^-1 with J the Jacobian of the inlier residuals with respect to
delta and sigma^2 = sum(r^2) / (2N - 6), the residual variance (Gauss-Newton's normal matrix, as
RTAB-Map derives link information from PnP inliers). Noise of the 3-D points is folded into sigma.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["skew", "adjoint", "pnp_covariance", "transform_covariance"]

F64 = npt.NDArray[np.float64]


def skew(v: npt.ArrayLike) -> F64:
    x, y, z = np.asarray(v, np.float64).reshape(3)
    return np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])


def adjoint(T: npt.ArrayLike) -> F64:
    """(6, 6) adjoint of an SE(3) transform for (translation, rotation) ordered twists."""
    T = np.asarray(T, np.float64)
    R, t = T[:3, :3], T[:3, 3]
    ad = np.zeros((6, 6))
    ad[:3, :3] = R
    ad[:3, 3:] = skew(t) @ R
    ad[3:, 3:] = R
    return ad


def pnp_jacobian(points_query: npt.ArrayLike, fx: float, fy: float) -> F64:
    """(2N, 6) Jacobian of the pinhole projections of points (N, 3) in the query camera frame with
    respect to delta, where T_match_query = T_est * exp(delta) and points come from the match frame.

    A point X_m maps to X_q = exp(-delta) T_est^-1 X_m, so dX_q/d(rho, phi) = [-I, [X_q]x].
    """
    X = np.asarray(points_query, np.float64).reshape(-1, 3)
    x, y, z = X[:, 0], X[:, 1], X[:, 2]
    zero = np.zeros_like(z)
    du = np.stack([fx / z, zero, -fx * x / z ** 2], axis=1)  # (N, 3)
    dv = np.stack([zero, fy / z, -fy * y / z ** 2], axis=1)
    skews = np.zeros((len(X), 3, 3))
    skews[:, 0, 1], skews[:, 0, 2], skews[:, 1, 2] = -z, y, -x
    skews[:, 1, 0], skews[:, 2, 0], skews[:, 2, 1] = z, -y, x
    dX = np.concatenate([np.broadcast_to(-np.eye(3), (len(X), 3, 3)), skews], axis=2)  # (N, 3, 6)
    J = np.stack([np.einsum("nk,nkj->nj", du, dX), np.einsum("nk,nkj->nj", dv, dX)], axis=1)
    return J.reshape(-1, 6)


def pnp_covariance(points_match: npt.ArrayLike, pixels_query: npt.ArrayLike, K: npt.ArrayLike,
                   T_match_query: npt.ArrayLike) -> tuple[F64, float]:
    """Covariance (6, 6) of T_match_query (camera frames) from PnP inliers, and the residual RMS (px).

    points_match: (N, 3) in the match camera frame; pixels_query: (N, 2) undistorted pixels of the
    query camera with matrix K (3, 3). Needs N >= 4.
    """
    K = np.asarray(K, np.float64)
    T = np.asarray(T_match_query, np.float64)
    Xm = np.asarray(points_match, np.float64).reshape(-1, 3)
    Tinv = np.linalg.inv(T)
    Xq = Xm @ Tinv[:3, :3].T + Tinv[:3, 3]
    proj = Xq[:, :2] / Xq[:, 2:3] * [K[0, 0], K[1, 1]] + K[:2, 2]
    r = (proj - np.asarray(pixels_query, np.float64).reshape(-1, 2)).reshape(-1)
    dof = max(1, r.size - 6)
    sigma2 = float(r @ r) / dof
    J = pnp_jacobian(Xq, K[0, 0], K[1, 1])
    cov = sigma2 * np.linalg.pinv(J.T @ J)
    return 0.5 * (cov + cov.T), float(np.sqrt(np.mean(r ** 2)))


def transform_covariance(cov: npt.ArrayLike, T_a_b: npt.ArrayLike) -> F64:
    """Covariance of T' = T_a_b * T * T_a_b^-1 given that of T (right perturbations): Ad C Ad^T.

    With T_a_b = T_body_cam this turns a camera-frame pose covariance into the body frame.
    """
    ad = adjoint(T_a_b)
    out = ad @ np.asarray(cov, np.float64) @ ad.T
    return 0.5 * (out + out.T)
