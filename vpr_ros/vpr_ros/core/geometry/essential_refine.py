"""Refinement of a scale-free two-view pose (rotation + translation direction) on its inliers.

The essential matrix from USAC MAGSAC is a sample's model polished on its consensus set, not the
maximum-likelihood pose. Here the 5 parameters (rotation 3, direction on the unit sphere 2) are
refined by Levenberg-Marquardt on the Sampson error in pixels (first-order geometric distance to
the epipolar lines in both images), with Huber weights; the inliers are then recomputed from the
refined model (Sampson error below the threshold and points in front of both cameras) and the pose
refined again on them.

Poses are T_match_query of the cameras, translation of unit length. The perturbation follows
``pose_covariance``: T = T_est * exp(delta), delta = (x, y, z, rot_x, rot_y, rot_z) in the query
camera frame; the direction moves with the translation part orthogonal to u = R^T t (moving along u
changes only the unobservable length). The covariance is sigma^2 (J^T J)^-1 over the 5 parameters
with J the Sampson Jacobian at the solution, mapped into the 6x6 layout with ``UNKNOWN_SCALE_VARIANCE``
along u ("scale unconstrained").
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import numpy.typing as npt

from vpr_ros.core.geometry.pose_covariance import skew

__all__ = ["RefinedEssential", "sampson", "essential_of", "direction_basis", "refine_essential",
           "essential_covariance", "essential_residuals_px", "widen", "unrefined_covariance", "cheirality",
           "UNKNOWN_SCALE_VARIANCE"]

F64 = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
# Variance (unit-vector units^2) along the translation of a scale-free pose: "scale unconstrained".
UNKNOWN_SCALE_VARIANCE = 1e6


@dataclasses.dataclass(frozen=True)
class RefinedEssential:
    """T_match_query (4, 4) with unit translation; inliers: (N,) mask over all correspondences;
    covariance: (6, 6) in the query camera frame (see module doc); rms_px: Sampson RMS of the
    inliers; sigma_rot_deg / sigma_dir_deg: largest standard deviation of rotation / direction."""

    T_match_query: F64
    inliers: BoolArray
    covariance: F64
    rms_px: float
    sigma_rot_deg: float
    sigma_dir_deg: float


def sampson(E: F64, x_m: F64, x_q: F64) -> F64:
    """Signed Sampson distance (normalised image units) of (N, 2) pairs for x_q^T E x_m = 0.

    E: (3, 3), or (K, 3, 3) for K models at once (then (K, N) distances)."""
    hm = np.concatenate([x_m, np.ones((len(x_m), 1))], axis=1)
    hq = np.concatenate([x_q, np.ones((len(x_q), 1))], axis=1)
    Ex = hm @ np.swapaxes(E, -1, -2)  # (..., N, 3): E x_m per point
    Etx = hq @ E  # E^T x_q per point
    num = np.sum(hq * Ex, axis=-1)
    return num / np.sqrt(Ex[..., 0] ** 2 + Ex[..., 1] ** 2 + Etx[..., 0] ** 2 + Etx[..., 1] ** 2 + 1e-300)


def essential_of(T_m_q: F64) -> F64:
    R, t = T_m_q[:3, :3], T_m_q[:3, 3]
    return skew(-R.T @ t) @ R.T  # [t_qm]x R_qm with T_query_match = T_m_q^-1


def _cross(a: F64, b: F64) -> F64:  # np.cross costs ~100 us of overhead per call, in the LM's inner loop
    return np.array([a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]])


def direction_basis(T_m_q: F64) -> tuple[F64, F64, F64]:
    """u (translation direction in the query frame) and two unit vectors orthogonal to it."""
    u = T_m_q[:3, :3].T @ T_m_q[:3, 3]
    u = u / max(np.linalg.norm(u), 1e-12)
    a = np.eye(3)[int(np.argmin(np.abs(u)))]
    b1 = _cross(u, a)
    b1 /= np.linalg.norm(b1)
    return u, b1, _cross(u, b1)


def _retract(T: F64, p: F64, basis: tuple[F64, F64, F64] | None = None) -> F64:
    """T * exp(delta(p)), p = (direction a, b, rotation 3); the translation renormalised.
    basis: ``direction_basis(T)`` when the caller has it."""
    _, b1, b2 = basis or direction_basis(T)
    step = np.eye(4)
    step[:3, :3] = cv2.Rodrigues(p[2:].reshape(3, 1))[0]
    step[:3, 3] = p[0] * b1 + p[1] * b2
    out = T @ step
    out[:3, 3] /= max(np.linalg.norm(out[:3, 3]), 1e-12)
    return out


def _residuals(T: F64, x_m: F64, x_q: F64, focal: float) -> F64:
    return sampson(essential_of(T), x_m, x_q) * focal


def essential_residuals_px(T_m_q: F64, x_m: F64, x_q: F64, focal: float) -> F64:
    """(N,) signed Sampson errors in pixels of normalised pairs under the pose T_match_query."""
    return _residuals(T_m_q, x_m, x_q, focal)


def _jacobian(T: F64, x_m: F64, x_q: F64, focal: float, r0: F64) -> F64:
    eps = 1e-7
    basis = direction_basis(T)
    E = np.stack([essential_of(_retract(T, eps * np.eye(5)[k], basis)) for k in range(5)])
    J = ((sampson(E, x_m, x_q) * focal - r0) / eps).T
    return J


def _lm(T: F64, x_m: F64, x_q: F64, focal: float, huber_px: float, iterations: int = 30) -> F64:
    lam = 1e-3

    def cost(r: F64) -> float:
        a = np.abs(r)
        return float(np.sum(np.where(a <= huber_px, 0.5 * r ** 2, huber_px * (a - 0.5 * huber_px))))
    r = _residuals(T, x_m, x_q, focal)
    c = cost(r)
    for _ in range(iterations):
        J = _jacobian(T, x_m, x_q, focal, r)
        w = np.minimum(1.0, huber_px / np.maximum(np.abs(r), 1e-12))
        H = J.T @ (J * w[:, None])
        g = J.T @ (w * r)
        improved = False
        for _ in range(8):
            try:
                d = -np.linalg.solve(H + lam * np.diag(np.diag(H) + 1e-12), g)
            except np.linalg.LinAlgError:
                lam *= 10
                continue
            T_new = _retract(T, d)
            r_new = _residuals(T_new, x_m, x_q, focal)
            c_new = cost(r_new)
            if c_new < c:
                T, r, improved = T_new, r_new, c - c_new > 1e-8 * max(c, 1e-12)
                c = c_new
                lam = max(lam / 10, 1e-9)
                break
            lam *= 10
        if not improved:
            break
    return T


def cheirality(T_m_q: F64, x_m: F64, x_q: F64) -> BoolArray:
    """Points triangulated from (N, 2) normalised pairs lie in front of both cameras."""
    T_q_m = np.linalg.inv(T_m_q)
    P_m = np.eye(3, 4)
    P_q = T_q_m[:3, :]
    X = cv2.triangulatePoints(P_m, P_q, x_m.T.astype(np.float64), x_q.T.astype(np.float64))
    w = X[3]
    with np.errstate(divide="ignore", invalid="ignore"):
        Xm = (X[:3] / w).T
    z_m = Xm[:, 2]
    z_q = (Xm @ T_q_m[:3, :3].T + T_q_m[:3, 3])[:, 2]
    return np.isfinite(z_m) & (z_m > 0) & (z_q > 0)


def essential_covariance(T: F64, x_m: F64, x_q: F64, focal: float) -> tuple[F64, float, float, float]:
    """(6, 6) covariance (query camera frame) of a scale-free pose from its inliers' Sampson residuals,
    the residual RMS (px) and the largest rotation / direction standard deviations (deg)."""
    r = _residuals(T, x_m, x_q, focal)
    J = _jacobian(T, x_m, x_q, focal, r)
    sigma2 = float(r @ r) / max(1, len(r) - 5)
    cov5 = sigma2 * np.linalg.pinv(J.T @ J, rcond=1e-12)
    u, b1, b2 = direction_basis(T)
    P = np.zeros((6, 5))
    P[:3, 0], P[:3, 1], P[3:, 2:] = b1, b2, np.eye(3)
    cov = P @ cov5 @ P.T + UNKNOWN_SCALE_VARIANCE * np.outer(np.r_[u, 0, 0, 0], np.r_[u, 0, 0, 0])
    s_rot, s_dir = _sigmas(cov5)
    return 0.5 * (cov + cov.T), float(np.sqrt(np.mean(r ** 2))), s_rot, s_dir


def _sigmas(cov5: F64) -> tuple[float, float]:
    """Largest rotation and direction standard deviations (deg) of a (5, 5) covariance."""
    s_dir = float(np.degrees(np.sqrt(max(0.0, np.linalg.eigvalsh(cov5[:2, :2]).max()))))
    s_rot = float(np.degrees(np.sqrt(max(0.0, np.linalg.eigvalsh(cov5[2:, 2:]).max()))))
    return s_rot, s_dir


def widen(ref: RefinedEssential, extra5: F64) -> RefinedEssential:
    """``ref`` with ``extra5`` (5, 5; direction on b1, b2 of ``direction_basis``, then rotation) added
    to the covariance of its 5 observable parameters (the 1e6 variance along the direction stays)."""
    _, b1, b2 = direction_basis(ref.T_match_query)
    P = np.zeros((6, 5))
    P[:3, 0], P[:3, 1], P[3:, 2:] = b1, b2, np.eye(3)
    extra = P @ np.asarray(extra5, np.float64) @ P.T
    cov = ref.covariance + 0.5 * (extra + extra.T)
    s_rot, s_dir = _sigmas(P.T @ cov @ P)
    return dataclasses.replace(ref, covariance=cov, sigma_rot_deg=s_rot, sigma_dir_deg=s_dir)


def unrefined_covariance(T_m_q: F64, x_m: F64, x_q: F64, focal: float) -> tuple[F64, float]:
    """The issue 19 estimator's covariance of the unrefined pose (``geometry.refine_essential`` false):
    sigma^2 (J^T J)^-1 over 6 parameters from the inliers' Sampson residuals (pixels), numerical
    Jacobian, ``UNKNOWN_SCALE_VARIANCE`` along the translation; and the residual RMS (px)."""
    r0 = _residuals(T_m_q, x_m, x_q, focal)
    J = np.zeros((len(r0), 6))
    eps = 1e-6
    for k in range(6):
        d = np.zeros(6)
        d[k] = eps
        step = np.eye(4)
        step[:3, :3] = cv2.Rodrigues(d[3:].reshape(3, 1))[0]
        step[:3, 3] = d[:3]
        J[:, k] = (_residuals(T_m_q @ step, x_m, x_q, focal) - r0) / eps
    sigma2 = float(r0 @ r0) / max(1, len(r0) - 5)
    cov = sigma2 * np.linalg.pinv(J.T @ J, rcond=1e-10)
    u = np.zeros(6)
    u[:3] = T_m_q[:3, :3].T @ T_m_q[:3, 3]
    cov += UNKNOWN_SCALE_VARIANCE * np.outer(u, u)
    return 0.5 * (cov + cov.T), float(np.sqrt(np.mean(r0 ** 2)))


def refine_essential(T_m_q: F64, x_m: F64, x_q: F64, inliers: BoolArray, focal: float,
                     threshold_px: float, rounds: int = 2) -> RefinedEssential:
    """LM on the inliers, inliers recomputed from the refined model, refined again (``rounds``).

    x_m, x_q: (N, 2) undistorted normalised coordinates of all correspondences; inliers: (N,) the
    initial consensus set; focal: pixels per normalised unit; threshold_px: inlier threshold.
    """
    T = np.array(T_m_q, np.float64)
    T[:3, 3] /= max(np.linalg.norm(T[:3, 3]), 1e-12)
    inl = np.asarray(inliers, bool).copy()
    for _ in range(rounds):
        if inl.sum() < 6:
            break
        T = _lm(T, x_m[inl], x_q[inl], focal, huber_px=0.5 * threshold_px)
        new = (np.abs(_residuals(T, x_m, x_q, focal)) < threshold_px) & cheirality(T, x_m, x_q)
        if np.array_equal(new, inl):
            break
        inl = new
    if inl.sum() >= 6:
        cov, rms, s_rot, s_dir = essential_covariance(T, x_m[inl], x_q[inl], focal)
    else:
        cov, rms, s_rot, s_dir = np.full((6, 6), np.nan), float("nan"), float("inf"), float("inf")
    return RefinedEssential(T, inl, cov, rms, s_rot, s_dir)
