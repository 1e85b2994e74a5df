"""Relative pose of a verified loop: correspondences in, pose + covariance + inliers + verdict out.

Verification (``verification.py``) decides "same place"; this module measures the transform.
Metric case (the match keyframe has stereo/RGB-D points): PnP with USAC MAGSAC, then
Levenberg-Marquardt on the inliers. Monocular case: essential matrix with USAC MAGSAC and the
cheirality check of ``cv2.recoverPose``; the translation is a unit direction
(``scale_known=False``) and is never given a scale. When a rotation alone explains the
correspondences (parallax below ``min_parallax_deg``) the translation direction is unobservable:
the rotation is kept for diagnostics, the pose is not valid. ``geometry.covariance_model`` iid and
``geometry.refine_essential`` false give the issue 19 estimator back (plain covariance, unrefined
essential pose and its validity rules) for side-by-side benchmarks.

Poses are T_match_query of the bodies (``T_body_cam`` of each keyframe's camera applied);
covariances follow ``pose_covariance``.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import numpy.typing as npt

from vpr_ros.core.config import GeometryConfig
from vpr_ros.core.geometry.correspondences import GridLayout, match_keypoints_in_cells
from vpr_ros.core.geometry.essential_refine import RefinedEssential, unrefined_covariance
from vpr_ros.core.geometry.essential_search import search_essential
from vpr_ros.core.geometry.keyframe_geometry import camera_of, depth_sigma_of
from vpr_ros.core.geometry.pose_covariance import IID_MODEL, pnp_covariance, transform_covariance
from vpr_ros.core.types import KeyframeGeometry

__all__ = ["PoseEstimate", "estimate_pnp", "estimate_essential", "relative_pose", "REJECTION_REASONS"]

F64 = npt.NDArray[np.float64]
REJECTION_REASONS = ("no_geometry", "too_few_correspondences", "too_few_inliers", "low_inlier_ratio",
                     "clustered_inliers", "non_rigid", "degenerate", "low_parallax")


@dataclasses.dataclass(frozen=True)
class PoseEstimate:
    """Result of one relative-pose estimate.

    T_match_query: (4, 4) float64 or None. covariance: (6, 6) float64 or None (see
    ``pose_covariance``). valid: well conditioned and usable as a factor. reason: "" when valid,
    else one of REJECTION_REASONS. correspondences: keypoint pairs tried; inliers: robust inliers.
    rms_px: inlier residual RMS (reprojection for PnP, Sampson for essential). inlier_points: (K, 3)
    the PnP inliers' 3-D points in the match's body frame (what the pose rests on; None for essential).
    """

    method: str
    T_match_query: F64 | None
    covariance: F64 | None
    valid: bool
    reason: str
    scale_known: bool
    correspondences: int
    inliers: int
    rms_px: float = float("nan")
    inlier_points: F64 | None = None


def _reject(method: str, reason: str, n: int, inliers: int = 0, T: F64 | None = None,
            scale_known: bool = True) -> PoseEstimate:
    return PoseEstimate(method, T, None, False, reason, scale_known, n, inliers)


def _spread(pixels: F64, image_hw: tuple[int, int]) -> float:
    lo, hi = np.percentile(pixels, [5, 95], axis=0)
    return float(np.sqrt(max(0.0, (hi[0] - lo[0]) * (hi[1] - lo[1])) / (image_hw[0] * image_hw[1])))


def _check(pixels: F64, inliers: npt.NDArray[np.intp], image_hw: tuple[int, int], config: GeometryConfig) -> str:
    """The validity rules of both methods; pixels: (N, 2) query pixels of all correspondences."""
    n = len(pixels)
    if len(inliers) < config.min_inliers:
        return "too_few_inliers"
    if len(inliers) < config.min_inlier_ratio * n:
        return "low_inlier_ratio"
    spread = _spread(pixels[inliers], image_hw)
    if spread < config.min_spread:
        return "clustered_inliers"
    # A look-alike place (or a scene that moved) fits one part of the view, e.g. one photograph of
    # several: the inliers then cover a fraction of what the correspondences cover, or whole image
    # regions full of correspondences have (almost) no inliers (issue 20).
    if spread < config.min_inlier_extent * _spread(pixels, image_hw):
        return "non_rigid"
    if (config.max_unexplained_share < 1.0
            and _unexplained_share(pixels, inliers, image_hw) > config.max_unexplained_share):
        return "non_rigid"
    return ""


def _unexplained_share(pixels: F64, inliers: npt.NDArray[np.intp], image_hw: tuple[int, int]) -> float:
    """Share of the correspondences (N, 2 px) in cells of a 4x4 image grid that hold >= 8 of them
    and whose inlier fraction is below a third of the overall one: the regions the pose does not explain."""
    h, w = image_hw
    cell = (np.clip(pixels[:, 1] * (4 / h), 0, 3).astype(int) * 4 + np.clip(pixels[:, 0] * (4 / w), 0, 3).astype(int))
    is_inlier = np.zeros(len(pixels), bool)
    is_inlier[inliers] = True
    count = np.bincount(cell, minlength=16)
    explained = np.bincount(cell, weights=is_inlier, minlength=16)
    dead = (count >= 8) & (explained < count * is_inlier.mean() / 3)
    return float(count[dead].sum()) / max(1, len(pixels))


def _to_body(T_cam: F64, T_body_cam_match: F64, T_body_cam_query: F64) -> F64:
    return T_body_cam_match @ T_cam @ np.linalg.inv(T_body_cam_query)


def estimate_pnp(points_match: npt.ArrayLike, pixels_query: npt.ArrayLike, query: KeyframeGeometry,
                 T_body_cam_match: F64, config: GeometryConfig, seed: int = 0,
                 depth_sigma_coeff: float = 0.0) -> PoseEstimate:
    """PnP: (N, 3) match-camera points and the (N, 2) distorted query pixels observing them;
    depth_sigma_coeff: the points' depth noise (sigma_z = coeff * z^2, ``pose_covariance``)."""
    X = np.asarray(points_match, np.float64).reshape(-1, 3)
    cam = camera_of(query)
    px = cam.ideal_pixels(pixels_query)
    n = len(X)
    if n < max(6, config.min_inliers):
        return _reject("pnp", "too_few_correspondences", n)
    cv2.setRNGSeed(seed)  # the same frames always give the same pose
    ok, rvec, tvec, inl = cv2.solvePnPRansac(X, px, cam.K, None, iterationsCount=2000,
                                             reprojectionError=config.ransac_threshold_px,
                                             confidence=0.9999, flags=cv2.USAC_MAGSAC)
    if not ok or inl is None or len(inl) < 6:
        return _reject("pnp", "too_few_inliers", n, 0 if inl is None else len(inl))
    idx = inl.reshape(-1)
    rvec, tvec = cv2.solvePnPRefineLM(X[idx], px[idx], cam.K, None, rvec, tvec)
    # Inliers again at the refined pose, then one more LM pass on them.
    proj, _ = cv2.projectPoints(X, rvec, tvec, cam.K, None)
    err = np.linalg.norm(proj.reshape(-1, 2) - px, axis=1)
    idx = np.flatnonzero(err < config.ransac_threshold_px)
    if len(idx) < 6:
        return _reject("pnp", "too_few_inliers", n, len(idx))
    rvec, tvec = cv2.solvePnPRefineLM(X[idx], px[idx], cam.K, None, rvec, tvec)
    T_q_m = np.eye(4)
    T_q_m[:3, :3] = cv2.Rodrigues(rvec)[0]
    T_q_m[:3, 3] = tvec.reshape(3)
    T_cam = np.linalg.inv(T_q_m)
    model = IID_MODEL if config.covariance_model == "iid" else None  # None: PNP_MODEL, read at call time
    cov_cam, rms = pnp_covariance(X[idx], px[idx], cam.K, T_cam, model, depth_sigma_coeff)
    T = _to_body(T_cam, T_body_cam_match, query.T_body_cam)
    cov = transform_covariance(cov_cam, query.T_body_cam)
    reason = _check(np.asarray(pixels_query, np.float64).reshape(-1, 2), idx, query.image_hw, config)
    if not reason and not (np.all(np.isfinite(cov)) and np.linalg.eigvalsh(cov).min() > 0):
        reason = "degenerate"
    body_points = X[idx] @ T_body_cam_match[:3, :3].T + T_body_cam_match[:3, 3]
    return PoseEstimate("pnp", T, cov if not reason else None, not reason, reason, True, n, len(idx), rms,
                        body_points)


def _kabsch(b_from: F64, b_to: F64) -> F64:
    """Rotation R minimising sum |b_to - R b_from|^2 over (N, 3) unit bearings (Wahba's problem)."""
    u, _, vt = np.linalg.svd(b_to.T @ b_from)
    d = np.sign(np.linalg.det(u @ vt))
    return u @ np.diag([1.0, 1.0, d]) @ vt


def _bearings(n: F64) -> F64:
    b = np.concatenate([n, np.ones((len(n), 1))], axis=1)
    return b / np.linalg.norm(b, axis=1, keepdims=True)


def estimate_essential(pixels_match: npt.ArrayLike, pixels_query: npt.ArrayLike, match: KeyframeGeometry,
                       query: KeyframeGeometry, config: GeometryConfig, seed: int = 0) -> PoseEstimate:
    """Monocular pose from (N, 2) distorted pixel pairs: rotation and unit translation."""
    pm = np.asarray(pixels_match, np.float64).reshape(-1, 2)
    pq = np.asarray(pixels_query, np.float64).reshape(-1, 2)
    n = len(pm)
    if n < max(8, config.min_inliers):
        return _reject("essential", "too_few_correspondences", n, scale_known=False)
    cam_m, cam_q = camera_of(match), camera_of(query)
    x_m, x_q = cam_m.undistort_points(pm), cam_q.undistort_points(pq)
    focal = float(np.mean([cam_q.K[0, 0], cam_q.K[1, 1], cam_m.K[0, 0], cam_m.K[1, 1]]))
    cv2.setRNGSeed(seed)
    E, mask = cv2.findEssentialMat(x_m, x_q, np.eye(3), method=cv2.USAC_MAGSAC, prob=0.9999,
                                   threshold=config.ransac_threshold_px / focal, maxIters=2000)
    if E is None or mask is None or E.shape != (3, 3):
        return _reject("essential", "degenerate", n, scale_known=False)
    inl = mask.reshape(-1).astype(bool)
    if inl.sum() < 8:
        return _reject("essential", "too_few_inliers", n, int(inl.sum()), scale_known=False)
    # Parallax left after the best pure rotation (fitted robustly through a homography's inliers):
    # too little and the translation direction is unobservable, and cheirality is meaningless.
    b_m, b_q = _bearings(x_m), _bearings(x_q)

    def rotation_fit(use: npt.NDArray[np.bool_]) -> tuple[F64, F64]:
        R_fit = _kabsch(b_q[use], b_m[use])  # b_m ~ R_match_query b_q
        return R_fit, np.degrees(np.arccos(np.clip(np.einsum("ij,ij->i", b_q @ R_fit.T, b_m), -1.0, 1.0)))
    R_rot, parallax = rotation_fit(inl)
    if np.median(parallax[inl]) < 3 * config.min_parallax_deg:
        # Near-rotation: refit on a homography's inliers, robust to the outliers E cannot reject
        # when t ~ 0 (any epipole fits). Skipped for clear translations, where it only costs time.
        _, mask_h = cv2.findHomography(x_q, x_m, cv2.USAC_MAGSAC, config.ransac_threshold_px / focal,
                                       maxIters=2000)
        if mask_h is not None and mask_h.sum() >= 3:
            R_rot, parallax = rotation_fit(mask_h.reshape(-1).astype(bool))
    if np.median(parallax[inl]) < config.min_parallax_deg:
        T_rot = np.eye(4)
        T_rot[:3, :3] = R_rot
        T = _to_body(T_rot, match.T_body_cam, query.T_body_cam)
        T[:3, 3] = 0.0  # no translation was measured
        fits = int((parallax < np.degrees(config.ransac_threshold_px / focal)).sum())
        return _reject("homography", "low_parallax", n, fits, T, scale_known=False)
    # recoverPose keeps only points in front of both cameras (cheirality) among the inliers.
    _, R, t, cheiral = cv2.recoverPose(E, x_m[inl], x_q[inl], np.eye(3))
    idx = np.flatnonzero(inl)[cheiral.reshape(-1) > 0]
    T_q_m = np.eye(4)
    T_q_m[:3, :3] = R
    T_q_m[:3, 3] = t.reshape(3) / max(np.linalg.norm(t), 1e-12)
    if len(idx) < 8:
        return _reject("essential", "too_few_inliers", n, len(idx), scale_known=False)
    ref: RefinedEssential | None = None
    if config.refine_essential:  # LM from several starts, the best minimum, widened by its rivals
        mask = np.zeros(n, bool)
        mask[idx] = True
        ref = search_essential(np.linalg.inv(T_q_m), mask, x_m, x_q, focal, config.ransac_threshold_px, seed,
                               config.ambiguity_chi2).refined
        T_cam, cov_cam, rms, idx = ref.T_match_query, ref.covariance, ref.rms_px, np.flatnonzero(ref.inliers)
    else:  # the issue 19 estimator: the recoverPose pose as it is
        T_cam = np.linalg.inv(T_q_m)
        cov_cam, rms = unrefined_covariance(T_cam, x_m[idx], x_q[idx], focal)
    # Scale-free: rotate the unit direction into the body axes; the lever arms between camera and
    # body are metric and cannot be added to a direction (small against a loop's baseline).
    T = _to_body(T_cam, match.T_body_cam, query.T_body_cam)
    T[:3, 3] = match.T_body_cam[:3, :3] @ T_cam[:3, 3]
    cov = transform_covariance(cov_cam, np.block([[query.T_body_cam[:3, :3], np.zeros((3, 1))],
                                                  [np.zeros((1, 3)), np.ones((1, 1))]]))
    reason = _check(pq, idx, query.image_hw, config)
    if ref is None:  # issue 19's rules: only a finite covariance besides _check
        if not reason and not np.all(np.isfinite(cov)):
            reason = "degenerate"
    elif not reason and len(idx) < config.min_refined_inlier_ratio * n:  # what a non-rigid or wrong pair leaves
        reason = "low_inlier_ratio"
    elif not reason and len(idx) < config.min_essential_inliers:  # thin: a wrong minimum may fit best
        reason = "too_few_inliers"
    elif not reason and not (np.all(np.isfinite(cov)) and ref.sigma_rot_deg <= config.max_sigma_rot_deg
                             and ref.sigma_dir_deg <= config.max_sigma_dir_deg):
        reason = "degenerate"  # uncertainty (with the rival minima) above the stated bound
    return PoseEstimate("essential", T, cov if not reason else None, not reason, reason, False, n, len(idx),
                        rms)


def relative_pose(query: KeyframeGeometry, match: KeyframeGeometry, layout_query: GridLayout,
                  layout_match: GridLayout, cells_query: npt.ArrayLike, cells_match: npt.ArrayLike,
                  config: GeometryConfig, seed: int = 0) -> PoseEstimate:
    """The pose of an accepted loop: keypoints matched inside MNN cells, then PnP or essential.

    cells_query/cells_match: (M,) flat MNN cell indices (``verification.mnn_pairs``). The method
    follows ``config.method``; "auto" takes PnP when the match keyframe has 3-D points.
    """
    method = config.method
    if method == "off":
        return _reject("off", "no_geometry", 0)
    if method == "auto":
        method = "pnp" if match.has_depth else "essential"
    iq, im = match_keypoints_in_cells(query.keypoints, query.descriptors, layout_query, match.keypoints,
                                      match.descriptors, layout_match, cells_query, cells_match,
                                      config.cell_radius, config.ratio)
    if method == "pnp":
        X = match.points3d[im].astype(np.float64)
        has = np.all(np.isfinite(X), axis=1)
        est = estimate_pnp(X[has], query.keypoints[iq[has]], query, match.T_body_cam, config, seed,
                           depth_sigma_of(match, config))
        # auto: too few matched keypoints with depth (sparse RGB-D, far scene) still allow a scale-free pose.
        if config.method == "pnp" or est.reason != "too_few_correspondences":
            return est
    return estimate_essential(match.keypoints[im], query.keypoints[iq], match, query, config, seed)
