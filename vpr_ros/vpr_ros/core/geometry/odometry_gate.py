"""Odometry consistency gate for loops inside one robot and session.

Odometry drifts, but only so far: after travelling ``D`` metres and turning ``A`` radians between two
keyframes, the position error it can have accumulated is bounded by a drift model

    sigma_m   = min_sigma_m + translation_drift * D + rotation_drift_m_per_rad * A
    sigma_rad = min_sigma_rad + rotation_drift * A + heading_drift_rad_per_m * D

A loop says "the query is where the candidate was" (appearance only) or gives the measured transform
``T_match_query``. The gate computes the squared Mahalanobis distance of what odometry says against
that claim and rejects it above the chi-square quantile of ``confidence``:

* without a measured pose: the position difference of the two odometry poses, 3 dof, covariance
  ``sigma_m**2 * I``;
* with a measured pose: the 6-dof error ``log(T_pred^-1 T_meas)`` ([x, y, z, rx, ry, rz], the ROS
  covariance layout), covariance = drift + the measurement's own covariance; with an unknown
  translation scale (monocular) only the 3 rotation dof are tested.

``D`` and ``A`` are summed over consecutive keyframe poses of the stream, so motion between keyframes
counts as a straight line (a lower bound of the path: the gate errs towards rejecting).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import numpy.typing as npt
from scipy.spatial.transform import Rotation
from scipy.stats import chi2

from vpr_ros.core.config import OdometryGateConfig
from vpr_ros.core.errors import InputError
from vpr_ros.core.keyframes import rotation_angle

__all__ = ["GateDecision", "OdometryGate", "drift_sigmas", "motion_increment"]

F64 = npt.NDArray[np.float64]


@dataclasses.dataclass(frozen=True)
class GateDecision:
    """Outcome of one test: accepted, the squared Mahalanobis distance and what it was compared to."""

    accepted: bool
    statistic: float
    threshold: float
    dof: int
    sigma_m: float
    sigma_deg: float


def drift_sigmas(config: OdometryGateConfig, distance_m: float, rotation_rad: float) -> tuple[float, float]:
    """(position sigma in metres, rotation sigma in radians) after ``distance_m`` and ``rotation_rad``."""
    sigma_m = (config.min_sigma_m + config.translation_drift * distance_m
               + config.rotation_drift_m_per_rad * rotation_rad)
    sigma_rad = (math.radians(config.min_sigma_deg) + config.rotation_drift * rotation_rad
                 + math.radians(config.heading_drift_deg_per_m) * distance_m)
    return sigma_m, sigma_rad


def motion_increment(pose_a: F64, pose_b: F64) -> tuple[float, float]:
    """(straight-line distance in metres, rotation angle in radians) from ``pose_a`` to ``pose_b``."""
    distance = float(np.linalg.norm(pose_b[:3, 3] - pose_a[:3, 3]))
    return distance, rotation_angle(pose_a[:3, :3].T @ pose_b[:3, :3])


def _pose_error(predicted: F64, measured: F64) -> F64:
    """[x, y, z, rx, ry, rz] of ``predicted^-1 @ measured`` (rotation vector in radians)."""
    err = np.linalg.solve(predicted, measured)
    return np.concatenate([err[:3, 3], Rotation.from_matrix(err[:3, :3]).as_rotvec()])


class OdometryGate:
    """Keeps the odometer (travelled distance and turned angle) of the stream's keyframes and tests
    loops between them. Keys are the caller's keyframe keys; keyframes without a pose are not kept."""

    def __init__(self, config: OdometryGateConfig) -> None:
        self.config = config
        self._thresholds = {dof: float(chi2.ppf(config.confidence, dof)) for dof in (3, 6)}
        self.reset()

    def reset(self) -> None:
        """Forget every keyframe (a new stream, or odometry that jumped)."""
        # key -> (pose, travelled metres, turned radians, odometry segment)
        self._odometer: dict[int, tuple[F64, float, float, int]] = {}
        self._last: tuple[F64, float, float, int] | None = None
        self._segment = 0

    def add(self, key: int, pose: F64 | None) -> None:
        """Record keyframe ``key`` at ``pose`` ((4, 4) world_T_body, or None: odometry lost, which
        breaks the odometer: keyframes before the gap are not compared with those after it)."""
        if pose is None:
            if self._last is not None:
                self._segment += 1
            self._last = None
            return
        pose = np.asarray(pose, np.float64)
        if pose.shape != (4, 4) or not np.all(np.isfinite(pose)):
            raise InputError("odometry gate: pose must be a finite (4, 4) matrix")
        if self._last is None:
            entry = (pose, 0.0, 0.0, self._segment)
        else:
            d, a = motion_increment(self._last[0], pose)
            entry = (pose, self._last[1] + d, self._last[2] + a, self._segment)
        self._odometer[key] = entry
        self._last = entry

    def knows(self, key: int) -> bool:
        return key in self._odometer

    def check(self, query_key: int, match_key: int, relative_pose: F64 | None = None,
              covariance: F64 | None = None, translation_known: bool = True) -> GateDecision | None:
        """Test a loop between two recorded keyframes; None when either has no odometry (no opinion).

        relative_pose: measured (4, 4) T_match_query or None; covariance: its (6, 6) covariance in the
        ROS layout [x, y, z, rx, ry, rz] or None.
        """
        q, m = self._odometer.get(query_key), self._odometer.get(match_key)
        if q is None or m is None or q[3] != m[3]:
            return None  # no odometry, or an odometry gap between them: no opinion
        return self.test(q[0], m[0], abs(q[1] - m[1]), abs(q[2] - m[2]), relative_pose, covariance,
                         translation_known)

    def test(self, query_pose: F64, match_pose: F64, distance_m: float, rotation_rad: float,
             relative_pose: F64 | None = None, covariance: F64 | None = None,
             translation_known: bool = True) -> GateDecision:
        """Test a loop between odometry poses ``query_pose`` and ``match_pose`` ((4, 4) world_T_body)
        that are ``distance_m`` travelled and ``rotation_rad`` turned apart. See :meth:`check`."""
        sigma_m, sigma_rad = drift_sigmas(self.config, distance_m, rotation_rad)
        var = np.array([sigma_m ** 2] * 3 + [sigma_rad ** 2] * 3)
        if relative_pose is None:
            err = query_pose[:3, 3] - match_pose[:3, 3]
            cov = np.diag(var[:3])
        else:
            predicted = np.linalg.solve(match_pose, query_pose)
            err = _pose_error(predicted, np.asarray(relative_pose, np.float64))
            cov = np.diag(var) + (np.zeros((6, 6)) if covariance is None else np.asarray(covariance))
            if not translation_known:
                err, cov = err[3:], cov[3:, 3:]
        dof = int(err.shape[0])
        stat = float(err @ np.linalg.solve(cov, err))
        threshold = self._thresholds[dof]
        return GateDecision(stat <= threshold, stat, threshold, dof, sigma_m, math.degrees(sigma_rad))
