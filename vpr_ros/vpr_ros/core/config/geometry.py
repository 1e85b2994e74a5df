"""Configuration of what happens after retrieval: the relative pose of accepted loops
(``geometry.*``, core/geometry/relative_pose.py) and the odometry consistency gate (``odometry_gate.*``,
core/geometry/odometry_gate.py). Part of :class:`vpr_ros.core.config.Config`."""

from __future__ import annotations

import dataclasses

from vpr_ros.core.config.checks import (COVARIANCE_MODELS, GEOMETRY_METHODS, KEYPOINT_TYPES, MAX_COUNT,
                                        MAX_METRES, ON_INVALID, check_fields as _check_fields, meta as _meta)
from vpr_ros.core.errors import ConfigError

__all__ = ["GeometryConfig", "OdometryGateConfig"]


@dataclasses.dataclass(frozen=True)
class GeometryConfig:
    """Relative pose of accepted loops (vpr_ros.core.geometry.relative_pose): keypoints inside MNN cells -> PnP or essential."""

    method: str = dataclasses.field(default="auto", metadata=_meta(
        "auto: pnp when the match keyframe has depth (stereo/RGB-D; essential when too few matched "
        "keypoints have depth), essential with a camera only, nothing without a camera; off never "
        "estimates a pose.", choices=GEOMETRY_METHODS))
    keypoints: str = dataclasses.field(default="sift", metadata=_meta(
        "Keypoints that refine MNN cells to pixel accuracy (docs/geometry.md compares them).",
        choices=KEYPOINT_TYPES))
    max_keypoints: int = dataclasses.field(default=1000, metadata=_meta(
        "Keypoints kept per keyframe (strongest first).", lo=50, hi=20000))
    cell_radius: int = dataclasses.field(default=1, metadata=_meta(
        "Keypoints may match within this many grid cells around an MNN pair.", lo=0, hi=5))
    ratio: float = dataclasses.field(default=0.85, metadata=_meta(
        "Lowe ratio test among the keypoints allowed by the MNN cells.", lo=0.1, hi=1.0))
    ransac_threshold_px: float = dataclasses.field(default=2.0, metadata=_meta(
        "Robust estimator (USAC MAGSAC) inlier threshold, pixels.", lo=0.1, hi=50.0))
    min_inliers: int = dataclasses.field(default=20, metadata=_meta(
        "Inliers needed for a valid relative pose.", lo=6, hi=MAX_COUNT))
    min_inlier_ratio: float = dataclasses.field(default=0.25, metadata=_meta(
        "Inliers / correspondences needed for a valid relative pose.", lo=0.0, hi=1.0))
    min_spread: float = dataclasses.field(default=0.1, metadata=_meta(
        "Inliers must cover this fraction of the image (sqrt of their bounding-box area over the "
        "image area); clustered inliers give ill-conditioned poses.", lo=0.0, hi=1.0))
    min_parallax_deg: float = dataclasses.field(default=0.3, metadata=_meta(
        "Essential only: median parallax (deg) of the inliers left after the best pure rotation; "
        "below it the translation direction is unobservable (rotation kept, pose not valid). Pure "
        "rotations measure ~0.05, EuRoC's 0.3 m revisit at 3-5 m ~1.", lo=0.0, hi=45.0))
    max_depth_m: float = dataclasses.field(default=40.0, metadata=_meta(
        "Stereo/RGB-D points farther than this are dropped, metres.", lo=0.1, hi=MAX_METRES))
    stereo_disparity_sigma_px: float = dataclasses.field(default=0.4, metadata=_meta(
        "Standard deviation of a stereo point's disparity, pixels: its depth sigma is z^2 * this / "
        "(focal * baseline), folded into the PnP covariance (docs/geometry.md, Covariance). 0.4: the "
        "spread of the left-right keypoint matches across the epipolar line on EuRoC (std 0.39-0.44 px); "
        "0 treats stereo points as exact.", lo=0.0, hi=20.0))
    depth_sigma_coeff: float = dataclasses.field(default=0.0025, metadata=_meta(
        "RGB-D depth noise: sigma_z = this * z^2 (metres, z in metres), folded into the PnP covariance; "
        "also used for keyframes whose noise is unknown (maps saved before it was stored). 0.0025 covers "
        "structured light (Kinect v1 ~0.0015-0.002) and active stereo (RealSense D4xx ~0.002-0.004); "
        "0 for exact (rendered, simulated) depth.", lo=0.0, hi=1.0))
    on_invalid: str = dataclasses.field(default="publish", metadata=_meta(
        "What happens to an accepted loop whose pose is not valid: publish it without a pose "
        "(relative_pose_valid false) or reject it. Rejections are counted by reason either way.",
        choices=ON_INVALID))
    covariance_model: str = dataclasses.field(default="calibrated", metadata=_meta(
        "Covariance of metric (PnP) poses: calibrated (inflated for correlated keypoint errors, "
        "docs/geometry.md, Covariance) or iid, the plain sigma^2 (J^T J)^-1 of the issue 19 estimator "
        "(too small on real images; for comparisons).", choices=COVARIANCE_MODELS))
    refine_essential: bool = dataclasses.field(default=True, metadata=_meta(
        "Single camera: refine the essential-matrix pose by LM on the Sampson error from several starts "
        "(inliers recomputed), valid only under the refined_* and max_sigma_* rules below; false: the "
        "unrefined pose and the issue 19 validity rules (for comparisons)."))
    min_essential_inliers: int = dataclasses.field(default=120, metadata=_meta(
        "Single camera (refine_essential): inliers needed for a valid scale-free pose (min_inliers still "
        "applies to PnP). Thin or blurred pairs (30-80 inliers on the rendered rooms at 640x480, 1000 "
        "keypoints) can have a wrong minimum that fits best; sharp true pairs keep 200-560.",
        lo=6, hi=MAX_COUNT))
    min_refined_inlier_ratio: float = dataclasses.field(default=0.7, metadata=_meta(
        "Single camera (refine_essential): inliers of the refined pose / correspondences needed; sharp "
        "true pairs keep 0.8-0.95, look-alike places, wrong minima and strongly blurred pairs 0.2-0.7.",
        lo=0.0, hi=1.0))
    max_sigma_rot_deg: float = dataclasses.field(default=1.0, metadata=_meta(
        "Single camera (refine_essential): largest rotation standard deviation (deg) of a valid pose; a "
        "more uncertain pose is not valid (degenerate).", lo=0.0, hi=180.0))
    max_sigma_dir_deg: float = dataclasses.field(default=5.0, metadata=_meta(
        "Single camera (refine_essential): largest standard deviation (deg) of the translation direction "
        "of a valid pose; a more uncertain pose is not valid (degenerate).", lo=0.0, hi=180.0))
    ambiguity_chi2: float = dataclasses.field(default=45.0, metadata=_meta(
        "Single camera (refine_essential): another refined minimum whose robust Sampson cost is within "
        "this many residual variances of the best is a pose the data cannot rule out; its difference "
        "widens the covariance (then max_sigma_* apply). 45 ~ 3 (correlated keypoint errors, as the "
        "metric model's inflation) x 15.1 (chi^2 with 5 DoF, 99 %). 0: only the best minimum counts.",
        lo=0.0, hi=1e6))
    min_inlier_extent: float = dataclasses.field(default=0.6, metadata=_meta(
        "The inliers' extent (sqrt of their 5-95 % bounding-box area) over that of all correspondences "
        "needed for a valid pose (PnP and essential); a pose that explains only part of the matched view "
        "(a look-alike place, one photograph of several) is not valid (non_rigid). 0: off.",
        lo=0.0, hi=1.0))
    max_unexplained_share: float = dataclasses.field(default=0.3, metadata=_meta(
        "Largest share of the correspondences lying in image regions the pose does not explain (cells of "
        "a 4x4 grid with >= 8 correspondences and an inlier fraction below a third of the overall one) "
        "for a valid pose (PnP and essential); above it: non_rigid. True pairs 0-0.23 on the rendered "
        "rooms (repeated texture), look-alike places 0.19-0.65 (those below 0.35 also fail "
        "min_inlier_extent). 1: off.", lo=0.0, hi=1.0))

    def __post_init__(self) -> None:
        _check_fields(self, "geometry")


@dataclasses.dataclass(frozen=True)
class OdometryGateConfig:
    """Odometry consistency of loops inside one robot and session (needs poses; a no-op without).

    The drift odometry can have accumulated between two keyframes grows with the distance travelled
    and the angle turned between them; a candidate farther from the query than that drift allows is
    dropped before verification (``core/geometry/odometry_gate.py``).
    """

    enabled: bool = dataclasses.field(default=True, metadata=_meta(
        "Gate loops within the own robot and session by odometry (only where both keyframes have poses)."))
    min_sigma_m: float = dataclasses.field(default=0.5, metadata=_meta(
        "Position standard deviation at zero travel, metres (place size, keyframe spacing).", lo=0.0, hi=MAX_METRES))
    translation_drift: float = dataclasses.field(default=0.05, metadata=_meta(
        "Position standard deviation gained per metre travelled (0.05 = 5% of the distance).", lo=0.0, hi=MAX_METRES))
    rotation_drift_m_per_rad: float = dataclasses.field(default=0.5, metadata=_meta(
        "Position standard deviation gained per radian turned, metres (heading error after turns).",
        lo=0.0, hi=MAX_METRES))
    min_sigma_deg: float = dataclasses.field(default=2.0, metadata=_meta(
        "Rotation standard deviation at zero travel, degrees (used with a measured relative pose).",
        lo=0.0, hi=MAX_METRES))
    rotation_drift: float = dataclasses.field(default=0.05, metadata=_meta(
        "Rotation standard deviation gained per degree turned (0.05 = 5% of the angle).", lo=0.0, hi=MAX_METRES))
    heading_drift_deg_per_m: float = dataclasses.field(default=0.1, metadata=_meta(
        "Rotation standard deviation gained per metre travelled, degrees.", lo=0.0, hi=MAX_METRES))
    confidence: float = dataclasses.field(default=0.999, metadata=_meta(
        "Chi-square confidence of the Mahalanobis test; a loop is rejected above its quantile.",
        lo=0.5, hi=0.999999))

    def __post_init__(self) -> None:
        _check_fields(self, "odometry_gate")
        if self.min_sigma_m + self.translation_drift + self.rotation_drift_m_per_rad <= 0.0:
            raise ConfigError("odometry_gate: every position sigma term is 0, so no loop could pass; "
                              "give min_sigma_m > 0 or set odometry_gate.enabled false")
