"""Several local minima of a scale-free two-view pose: the best one, and the spread of those as good.

One RANSAC consensus refined by Levenberg-Marquardt (``essential_refine``) finds one local minimum
of the Sampson cost. On mostly planar views (a wall filling the image), with a small baseline or with
blurred keypoints, a second minimum several degrees away can explain the correspondences (almost) as
well; then the refined pose may be the wrong one, and its covariance, the curvature at one minimum,
cannot say so (issue 20: valid single-camera poses 2.6 deg / 29 deg off with claimed sigmas of
0.05 deg). So the pose is refined from several starts:

- the ``recoverPose`` pose of the USAC MAGSAC essential matrix (the caller's);
- the essential matrices of two other robust estimators (USAC_ACCURATE, plain RANSAC), which land in other
  consensus sets where the cost has several basins;
- the decompositions of a homography (a mostly planar view's other poses, ``cv2.decomposeHomographyMat``).

Each start is refined (inliers recomputed, ``refine_essential``); the pose is the minimum of the robust
cost sum(min(r^2, thr^2)) over all correspondences (a point behind a camera costs thr^2). Every other
minimum whose cost is within ``ambiguity_chi2 * s^2`` of it (s^2: the residual variance of the best
inliers) is a pose the data cannot rule out: the outer product of its difference from the best
(direction on the unit sphere, rotation; the message's perturbation) is added to the 5-parameter
covariance. A pose with a nearby rival becomes more uncertain and fails the uncertainty bound
(``geometry.max_sigma_rot_deg`` / ``max_sigma_dir_deg``), or its bound contains the rival.

Poses are T_match_query of the cameras, translation of unit length (``essential_refine``).
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import numpy.typing as npt

from vpr_ros.core.geometry.essential_refine import (RefinedEssential, cheirality, direction_basis,
                                                     essential_residuals_px, refine_essential, widen)

__all__ = ["SearchedEssential", "pose_starts", "robust_cost", "pose_difference", "search_essential"]

F64 = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
# Two starts closer than this (rotation deg, direction deg) converge to one minimum: refined once.
_SAME_START = (0.2, 1.0)
_ROUNDS = 1


@dataclasses.dataclass(frozen=True)
class SearchedEssential:
    """refined: the best minimum, its covariance widened by the rivals; rivals: other minima within
    the ambiguity bound (0 = the pose is unambiguous); minima: distinct refined starts."""

    refined: RefinedEssential
    rivals: int
    minima: int


def _T_match_query(R: F64, t: F64) -> F64:
    T_q_m = np.eye(4)
    T_q_m[:3, :3] = R
    T_q_m[:3, 3] = np.asarray(t, np.float64).reshape(3) / max(float(np.linalg.norm(t)), 1e-12)
    return np.linalg.inv(T_q_m)


def pose_starts(x_m: F64, x_q: F64, focal: float, threshold_px: float, seed: int) -> list[F64]:
    """Further starting poses (T_match_query, unit translation) from (N, 2) normalised pairs: the
    essential matrices of USAC_ACCURATE and RANSAC and the decompositions of a homography."""
    starts: list[F64] = []
    thr = threshold_px / focal
    for method in (cv2.USAC_ACCURATE, cv2.RANSAC):
        cv2.setRNGSeed(seed)
        E, mask = cv2.findEssentialMat(x_m, x_q, np.eye(3), method=method, prob=0.9999, threshold=thr,
                                       maxIters=2000)
        if E is None or mask is None or E.shape != (3, 3) or mask.sum() < 8:
            continue
        use = mask.reshape(-1).astype(bool)
        _, R, t, _ = cv2.recoverPose(E, x_m[use], x_q[use], np.eye(3))
        starts.append(_T_match_query(R, t))
    cv2.setRNGSeed(seed)
    H, mask_h = cv2.findHomography(x_m, x_q, cv2.USAC_MAGSAC, thr, maxIters=2000)
    if H is not None and mask_h is not None and mask_h.sum() >= 8:
        _, Rs, ts, _ = cv2.decomposeHomographyMat(H, np.eye(3))  # x_q ~ (R + t n^T / d) x_m
        starts += [_T_match_query(R, t) for R, t in zip(Rs, ts) if np.linalg.norm(t) > 1e-9]
    return starts


def robust_cost(T: F64, x_m: F64, x_q: F64, focal: float, threshold_px: float) -> float:
    """sum(min(r^2, thr^2)) of the Sampson errors r (px) of all pairs; a point behind a camera costs thr^2."""
    r = essential_residuals_px(T, x_m, x_q, focal)
    r2 = np.where(cheirality(T, x_m, x_q), np.minimum(r ** 2, threshold_px ** 2), threshold_px ** 2)
    return float(r2.sum())


def pose_difference(T_ref: F64, T: F64) -> F64:
    """(5,) difference of T from T_ref in T_ref's chart: the direction of T (R_ref^T t) on the unit
    sphere as a tangent vector on the basis b1, b2 of ``direction_basis``, then log(R_ref^T R)."""
    u, b1, b2 = direction_basis(T_ref)
    d = T_ref[:3, :3].T @ T[:3, 3]
    d = d / max(float(np.linalg.norm(d)), 1e-12)
    perp = d - (u @ d) * u
    norm = float(np.linalg.norm(perp))
    angle = float(np.arctan2(norm, u @ d))
    tangent = perp * (angle / norm) if norm > 1e-12 else np.zeros(3)
    rot = cv2.Rodrigues(T_ref[:3, :3].T @ T[:3, :3])[0].reshape(3)
    return np.r_[tangent @ b1, tangent @ b2, rot]


def _near(A: F64, B: F64) -> bool:
    rot = np.degrees(np.linalg.norm(cv2.Rodrigues(A[:3, :3].T @ B[:3, :3])[0]))
    cos = float(np.clip((A[:3, :3].T @ A[:3, 3]) @ (B[:3, :3].T @ B[:3, 3]), -1.0, 1.0))
    return bool(rot < _SAME_START[0] and np.degrees(np.arccos(cos)) < _SAME_START[1])


def search_essential(T_first: F64, inliers_first: BoolArray, x_m: F64, x_q: F64, focal: float,
                     threshold_px: float, seed: int, ambiguity_chi2: float) -> SearchedEssential:
    """The best refined minimum over ``T_first`` (with its consensus ``inliers_first``) and
    :func:`pose_starts`, its covariance widened by the rivals within ``ambiguity_chi2 * s^2``.

    x_m, x_q: (N, 2) undistorted normalised coordinates of all correspondences; focal: pixels per
    normalised unit; threshold_px: the inlier threshold.
    """
    minima: list[tuple[float, RefinedEssential]] = []
    minima_first: RefinedEssential | None = None  # the caller's start, refined with two rounds
    tried: list[F64] = []
    for k, start in enumerate([T_first, *pose_starts(x_m, x_q, focal, threshold_px, seed)]):
        if any(_near(start, t) for t in tried):
            continue
        tried.append(start)
        if k == 0:
            inl = np.asarray(inliers_first, bool)
        else:
            inl = (np.abs(essential_residuals_px(start, x_m, x_q, focal)) < threshold_px) & cheirality(start, x_m, x_q)
        if inl.sum() < 8:
            continue
        # Other starts get one round (LM, inliers recomputed): enough to rank them; the winner is polished.
        ref = refine_essential(start, x_m, x_q, inl, focal, threshold_px, rounds=_ROUNDS if k else 2)
        if ref.inliers.sum() >= 6 and np.all(np.isfinite(ref.covariance)):
            minima.append((robust_cost(ref.T_match_query, x_m, x_q, focal, threshold_px), ref))
            if k == 0:
                minima_first = ref
    if not minima:  # nothing refinable: the first start's (NaN covariance, not valid)
        return SearchedEssential(refine_essential(T_first, x_m, x_q, inliers_first, focal, threshold_px), 0, 0)
    minima.sort(key=lambda m: m[0])
    distinct: list[tuple[float, RefinedEssential]] = []
    for cost, ref in minima:  # starts that converged to one minimum count once
        if not any(_near(ref.T_match_query, kept.T_match_query) for _, kept in distinct):
            distinct.append((cost, ref))
    cost0, best = distinct[0]
    if best is not minima_first:
        best = refine_essential(best.T_match_query, x_m, x_q, best.inliers, focal, threshold_px, rounds=1)
    s2 = max(best.rms_px, 1e-3) ** 2
    rivals = [ref for cost, ref in distinct[1:] if cost - cost0 <= ambiguity_chi2 * s2]
    extra = np.zeros((5, 5))
    for ref in rivals:
        d = pose_difference(best.T_match_query, ref.T_match_query)
        extra += np.outer(d, d)
    return SearchedEssential(widen(best, extra) if rivals else best, len(rivals), len(distinct))
