"""Covariance of an estimated relative pose from its residuals at the solution.

Convention (the message's 6x6 layout, documented in LoopClosure.msg and docs/geometry.md): the
true pose is T = T_est * exp(delta) with delta = (x, y, z, rot_x, rot_y, rot_z), a perturbation in
the frame of the posed body (the query), translation first as in geometry_msgs/PoseWithCovariance.
GTSAM's Pose3 uses the same right perturbation with rotation first: swap the 3x3 blocks.

The estimate is sigma^2 (J^T J)^-1 with J the Jacobian of the inlier residuals with respect to
delta and sigma^2 = sum(r^2) / (2N - 6), the residual variance (Gauss-Newton's normal matrix, as
RTAB-Map derives link information from PnP inliers). With exact points (rendered depth) that is all.

Real stereo / RGB-D points have depth noise growing as z^2 (stereo: sigma_z = z^2 sigma_d / (f b)),
along the match camera's viewing ray: Sigma_X = sigma_z^2 n n^T with n = X / z (the match keypoint's
own pixel error is part of the pixel noise). ``depth_sigma_coeff`` (sigma_z = coeff * z^2) folds it in to
first order: each inlier's pixel covariance is C_i = s^2 I + J_X Sigma_X J_X^T (J_X: the query
projection's Jacobian w.r.t. the point). The pose is the unweighted least-squares fit (LM on the
reprojection error), so its covariance is the sandwich H^-1 (sum J_i^T C_i J_i) H^-1 with H = J^T J;
(sum J_i^T C_i^-1 J_i)^-1 would be that of a fit weighted by C_i^-1, which is smaller than the unweighted
fit's errors (a Monte-Carlo test shows NEES ~27 instead of 6). The pixel variance s^2 is estimated from
the residuals whitened by the point term (sum r_i^T (s^2 I + P_i)^-1 r_i = 2N - 6, and the MAD of the
residual components across the projected ray, which point noise does not move), so the point noise is
not counted twice; the model's inflation and floors apply to s^2. coeff 0 gives exactly the pixel-only
estimate.

That i.i.d. estimate is too small on real images: keypoint errors are correlated (neighbouring
keypoints share blur, texture and depth errors) and the residual at the fitted pose underestimates
them. :class:`CovarianceModel` (docs/geometry.md, Covariance, has the calibration) therefore uses
a robust pixel scale (max of the residual RMS and 1.4826 MAD, with a floor), multiplies by an
inflation calibrated on image pairs with known poses and by ``1 + n_thin / N`` (thin geometry
counts less than its inlier number says), and adds a floor per axis. ``IID_MODEL`` is the plain
estimate (used by the i.i.d. NEES test).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import numpy.typing as npt

__all__ = ["skew", "adjoint", "pnp_covariance", "transform_covariance", "CovarianceModel", "PNP_MODEL",
           "IID_MODEL", "depth_point_covariance"]

F64 = npt.NDArray[np.float64]


@dataclasses.dataclass(frozen=True)
class CovarianceModel:
    """cov = inflation * (1 + n_thin / N) * s^2 (J^T J)^-1 + diag(floor^2), where
    s = max(sigma_floor_px, residual RMS over 2N - 6 dof, robust_mad * 1.4826 MAD(residuals))."""

    inflation: float = 1.0  # variance factor for correlated keypoint errors (calibrated)
    n_thin: float = 0.0  # inliers at which the variance doubles again (thin geometry)
    sigma_floor_px: float = 0.0  # pixel noise never assumed below this
    robust_mad: bool = False  # also use the MAD scale (heavy tails inside the inlier threshold)
    floor_m: float = 0.0  # standard deviation floors per axis (translation, rotation)
    floor_rad: float = 0.0


IID_MODEL = CovarianceModel()
# Calibrated on rendered RGB-D loops (docs/geometry.md, Covariance): seed 21 (32 loops) and the
# bench's seed 20 (23 loops) give mean NEES 19.9 with IID_MODEL and 5.8 (91 % inside the 95 % bound)
# with this one. Per-axis floors of 0.5 mm / 0.005 deg pushed the mean NEES below 3.1: left at 0.
PNP_MODEL = CovarianceModel(inflation=3.0, n_thin=30.0, sigma_floor_px=0.3, robust_mad=True)


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


def depth_point_covariance(points: npt.ArrayLike, depth_sigma_coeff: float) -> F64:
    """(N, 3, 3) covariances of camera-frame points (N, 3) whose depth z has sigma coeff * z^2 (metres),
    along their viewing rays: sigma_z^2 n n^T with n = X / z (lateral terms x/z, y/z of the same error)."""
    X = np.asarray(points, np.float64).reshape(-1, 3)
    z = X[:, 2:3]
    n = X / z
    sigma_z = float(depth_sigma_coeff) * z[:, 0] ** 2
    return sigma_z[:, None, None] ** 2 * n[:, :, None] * n[:, None, :]


def pnp_covariance(points_match: npt.ArrayLike, pixels_query: npt.ArrayLike, K: npt.ArrayLike,
                   T_match_query: npt.ArrayLike, model: CovarianceModel | None = None,
                   depth_sigma_coeff: float = 0.0) -> tuple[F64, float]:
    """Covariance (6, 6) of T_match_query (camera frames) from PnP inliers, and the residual RMS (px).

    points_match: (N, 3) in the match camera frame; pixels_query: (N, 2) undistorted pixels of the
    query camera with matrix K (3, 3). Needs N >= 4. model: default ``PNP_MODEL`` (read at call time).
    depth_sigma_coeff: the points' depth noise, sigma_z = coeff * z^2 in metres (z: depth in the match
    camera; 0: exact points, the pixel-only estimate).
    """
    K = np.asarray(K, np.float64)
    T = np.asarray(T_match_query, np.float64)
    Xm = np.asarray(points_match, np.float64).reshape(-1, 3)
    Tinv = np.linalg.inv(T)
    Xq = Xm @ Tinv[:3, :3].T + Tinv[:3, 3]
    proj = Xq[:, :2] / Xq[:, 2:3] * [K[0, 0], K[1, 1]] + K[:2, 2]
    r = (proj - np.asarray(pixels_query, np.float64).reshape(-1, 2)).reshape(-1)
    J = pnp_jacobian(Xq, K[0, 0], K[1, 1])
    m = PNP_MODEL if model is None else model
    if depth_sigma_coeff > 0.0:
        P = _projected_point_covariance(Xq, Tinv[:3, :3], K, depth_point_covariance(Xm, depth_sigma_coeff))
        cov = _point_aware_covariance(J, r.reshape(-1, 2), P, m)
    else:
        cov = _model_scale(r, m) * np.linalg.pinv(J.T @ J)
    cov += np.diag([m.floor_m ** 2] * 3 + [m.floor_rad ** 2] * 3)
    return 0.5 * (cov + cov.T), float(np.sqrt(np.mean(r ** 2)))


def _model_scale(r: F64, m: CovarianceModel) -> float:
    """The variance factor of (J^T J)^-1 for stacked residuals r (2N,) under model m."""
    sigma2 = float(r @ r) / max(1, r.size - 6)
    if m.robust_mad:
        sigma2 = max(sigma2, _mad2(r))
    return _inflate(sigma2, r.size // 2, m)


def _mad2(v: F64) -> float:
    return (1.4826 * float(np.median(np.abs(v - np.median(v))))) ** 2


def _inflate(sigma2: float, n: int, m: CovarianceModel) -> float:
    return m.inflation * (1.0 + m.n_thin / max(1, n)) * max(sigma2, m.sigma_floor_px ** 2)


def _projected_point_covariance(points_query: F64, R_query_match: F64, K: F64, point_cov: F64) -> F64:
    """(N, 2, 2) J_X Sigma_X J_X^T: match-frame point covariances (N, 3, 3) seen as query pixels."""
    x, y, z = points_query[:, 0], points_query[:, 1], points_query[:, 2]
    zero = np.zeros_like(z)
    A = np.stack([np.stack([K[0, 0] / z, zero, -K[0, 0] * x / z ** 2], axis=1),
                  np.stack([zero, K[1, 1] / z, -K[1, 1] * y / z ** 2], axis=1)], axis=1)  # (N, 2, 3)
    JX = A @ R_query_match
    return JX @ point_cov @ JX.transpose(0, 2, 1)


def _point_aware_covariance(J: F64, r: F64, P: F64, m: CovarianceModel) -> F64:
    """H^-1 (sum J_i^T C_i J_i) H^-1, H = J^T J, C_i = s^2 I + P_i; J (2N, 6), r (N, 2), P (N, 2, 2).

    The pixel variance s^2 before the model's inflation solves sum r_i^T (s^2 I + P_i)^-1 r_i = 2N - 6
    (bisection: the left side falls as s^2 grows; 0 when the point term explains all of r); the
    robust scale is the MAD of the residual components along each P_i's least eigenvector.
    """
    n = len(r)
    lam, U = np.linalg.eigh(P)  # ascending: column 0 is the direction point noise moves least
    c = np.einsum("nij,ni->nj", U, r) ** 2  # squared residual components along the eigenvectors
    dof = max(1, 2 * n - 6)
    lo, hi = 0.0, float(c.sum()) / dof  # at hi the whitened sum is <= dof
    sigma2 = 0.0
    if float((c / np.maximum(lam, 1e-300)).sum()) > dof:
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if float((c / (mid + lam)).sum()) > dof else (lo, mid)
        sigma2 = hi
    if m.robust_mad:
        sigma2 = max(sigma2, _mad2(np.einsum("ni,ni->n", U[:, :, 0], r)))
    C = _inflate(sigma2, n, m) * np.eye(2) + P  # (N, 2, 2)
    Jn = J.reshape(n, 2, 6)
    H_inv = np.linalg.pinv(J.T @ J)
    return H_inv @ np.einsum("nai,nab,nbj->ij", Jn, C, Jn) @ H_inv


def transform_covariance(cov: npt.ArrayLike, T_a_b: npt.ArrayLike) -> F64:
    """Covariance of T' = T_a_b * T * T_a_b^-1 given that of T (right perturbations): Ad C Ad^T.

    With T_a_b = T_body_cam this turns a camera-frame pose covariance into the body frame.
    """
    ad = adjoint(T_a_b)
    out = ad @ np.asarray(cov, np.float64) @ ad.T
    return 0.5 * (out + out.T)
