"""One map pose per matched keyframe (a :class:`Hypothesis`) and the agreement test between two.

A hypothesis is the query's base pose in the map from one accepted candidate of a loaded map: the
candidate's map pose (``map.map_poses.MapPose``) composed with the measured relative pose
(``geometry.loop_pose``), the query's body moved to the base frame. It keeps two covariances (ROS
convention, ``map_pose``): ``covariance``, what a fix publishes (the measurement's, plus the map pose's
own with ``relocalization.map_pose_covariance: map``), and ``measurement``, the relative pose's part
alone. Agreement and the covariance bound use the
measurement: the map poses of neighbouring keyframes share their drift (nearly fully correlated), so
adding both to a difference would make every pair "agree".
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import numpy.typing as npt

from vpr_ros.core.config import RelocalizationConfig
from vpr_ros.core.geometry.relative_pose import PoseEstimate
from vpr_ros.core.localization.map_pose import (change_child, compose_map_pose, mahalanobis2, pose_difference,
                                                ros_from_right, sigmas)
from vpr_ros.core.localization.surfaces import support_points
from vpr_ros.core.map.map_poses import MapPose

__all__ = ["Hypothesis", "hypothesis", "agreement", "KINDS"]

F64 = npt.NDArray[np.float64]
KINDS = ("metric", "single_camera")


@dataclasses.dataclass(frozen=True)
class Hypothesis:
    """The query's base pose in the map from one matched keyframe.

    T_map_base: (4, 4); covariance / measurement: (6, 6) ROS convention (see the module docstring);
    keyframe: "robot/session/id" of the matched keyframe; inliers: of its relative pose; kind: KINDS.
    support: (K, 4) the inliers' map points with their tolerance (``surfaces.support_points``), or None
    (a single-camera pose has no 3-D points).
    """

    T_map_base: F64
    covariance: F64
    measurement: F64
    keyframe: str
    inliers: int
    kind: str
    support: F64 | None = None

    @property
    def sigmas(self) -> tuple[float, float]:
        """Largest position (m) and rotation (rad) standard deviation of the measurement."""
        return sigmas(self.measurement)


def hypothesis(estimate: PoseEstimate, map_pose: MapPose, T_body_base: F64, keyframe: str,
               single_camera_sigma_m: float, with_map_covariance: bool = False,
               T_body_cam_match: F64 | None = None) -> Hypothesis | None:
    """The hypothesis of one valid relative pose, or None when ``estimate`` is not valid.

    T_body_base: the query's base frame in its body frame (the body of ``estimate``). A metric pose
    is composed as it is. A single-camera pose (``scale_known`` false: the translation is a
    direction) keeps its rotation; its translation is set to zero (the camera stands near the matched
    keyframe) with an isotropic variance ``single_camera_sigma_m``^2 per axis instead.
    with_map_covariance: ``covariance`` also holds the map pose's own (``relocalization.map_pose_covariance:
    map``); otherwise it is the measurement's, relative to the stored map pose (``local``).
    T_body_cam_match: the matched keyframe's camera in its body frame (the support points'
    tolerances grow with their range from it); default identity.
    """
    if not estimate.valid or estimate.T_match_query is None or estimate.covariance is None:
        return None
    T = np.array(estimate.T_match_query, np.float64)
    cov = np.array(estimate.covariance, np.float64)
    kind = "metric" if estimate.scale_known else "single_camera"
    if kind == "single_camera":
        T[:3, 3] = 0.0
        cov[:3, :] = 0.0
        cov[:, :3] = 0.0
        cov[:3, :3] = np.eye(3) * single_camera_sigma_m ** 2
    T, cov = change_child(T, cov, T_body_base)
    map_cov = map_pose.covariance if with_map_covariance else np.zeros((6, 6))
    T_map_base, full = compose_map_pose(map_pose.T_map_base, map_cov, T, cov)
    support = None
    if estimate.inlier_points is not None and kind == "metric":
        # the map pose is the matched body's, as composed above
        support = support_points(estimate.inlier_points, map_pose.T_map_base,
                                 np.eye(4) if T_body_cam_match is None else T_body_cam_match)
    return Hypothesis(T_map_base, full, ros_from_right(T_map_base, cov), keyframe, int(estimate.inliers), kind,
                      support)


def agreement(a: Hypothesis, b: Hypothesis, measurement_b: F64 | None, config: RelocalizationConfig) -> tuple[bool, str]:
    """Do ``a`` and ``b`` (two map poses of the same base frame) agree? (verdict, why not).

    measurement_b: the covariance to use for ``b`` (e.g. carried forward by odometry), default
    ``b.measurement``. Agreement needs all of: squared Mahalanobis distance (6 dof, sum of the two
    measurement covariances) below ``agree_mahalanobis``, position difference below
    ``agree_position_m``, rotation difference below ``agree_rotation_deg``. Single-camera
    hypotheses compare rotations only by Mahalanobis (their positions are the matched keyframes').
    """
    delta = pose_difference(a.T_map_base, b.T_map_base)
    cov = a.measurement + (b.measurement if measurement_b is None else measurement_b)
    dist_m = float(np.linalg.norm(delta[:3]))
    angle_deg = math.degrees(float(np.linalg.norm(delta[3:])))
    if "single_camera" in (a.kind, b.kind):
        d2 = mahalanobis2(delta[3:], cov[3:, 3:])
        limit_m = max(config.agree_position_m, 3.0 * config.single_camera_sigma_m)
    else:
        d2 = mahalanobis2(delta, cov)
        limit_m = config.agree_position_m
    if angle_deg > config.agree_rotation_deg:
        return False, f"{a.keyframe} and {b.keyframe} differ by {angle_deg:.1f} deg"
    if dist_m > limit_m:
        return False, f"{a.keyframe} and {b.keyframe} differ by {dist_m:.2f} m"
    if d2 > config.agree_mahalanobis:
        return False, f"{a.keyframe} and {b.keyframe}: Mahalanobis^2 {d2:.1f} > {config.agree_mahalanobis:g}"
    return True, ""
