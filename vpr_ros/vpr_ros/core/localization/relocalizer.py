"""The relocaliser: a detector's StepResult in, the robot's pose in a loaded map (a Fix), a Refusal
saying why not, or None (nothing to say) out. Shared by the node (nodes/relocalization.py) and replay.

Per keyframe (only while the mode wants a fix): the accepted candidates of loaded maps, best verified
first, up to ``relocalization.max_candidates``, each get a relative pose (``geometry.loop_pose``, the
detector's own estimator; the detector's temporal consistency is not waited for) and become a
:class:`~vpr_ros.core.localization.evidence.Hypothesis` (map pose x relative pose, base frame). A fix is
published only when it is safe (docs/relocalization_core.md, "How a fix is made"):

1. a valid pose: metric (depth or stereo), or single-camera only with ``relocalization.single_camera``;
2. the measured part of its covariance within ``max_position_sigma_m`` / ``max_rotation_sigma_deg``;
3. independent evidence agrees: a second candidate's hypothesis of the same kind, or the hypothesis of
   one of the previous ``odometry_window`` keyframes carried forward by odometry; and no candidate
   disagrees (two look-alike places of the map both matching: refused);
4. a metric fix's agreeing evidence rests on map points that span ``min_surfaces`` planes
   (``surfaces.py``: one picture seen alone may hang in a place the map never saw).

Refusals carry one of :data:`REFUSAL_REASONS`; ``counts`` sums them with the fixes.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import TYPE_CHECKING, Mapping

import numpy as np
import numpy.typing as npt

from vpr_ros.core.config import Config
from vpr_ros.core.geometry.loop_pose import LoopGeometry
from vpr_ros.core.localization.evidence import Hypothesis, agreement, hypothesis
from vpr_ros.core.localization.map_pose import base_from_camera_matrix, compose_map_pose, xyz_quat
from vpr_ros.core.localization.surfaces import count_surfaces
from vpr_ros.core.map.map_poses import MapPose, OdometryDrift, PoseKey, pose_key
from vpr_ros.core.types import Keyframe

if TYPE_CHECKING:
    from vpr_ros.core.detector import LoopClosureDetector, StepResult

__all__ = ["Fix", "Refusal", "Relocalizer", "REFUSAL_REASONS", "keyframe_name"]

F64 = npt.NDArray[np.float64]
#: Why a keyframe that matched a loaded map gave no fix (counted per reason on /diagnostics).
REFUSAL_REASONS = (
    "no_pose",               # no candidate gave a valid relative pose (no calibration, too few inliers, ...)
    "single_camera_off",     # only single-camera poses and relocalization.single_camera is false
    "no_map_pose",           # the matched keyframes have no pose in the map frame
    "covariance_too_large",  # every pose's measured covariance is above the configured bound
    "unconfirmed",           # one piece of evidence only, so far (no second candidate, no earlier keyframe)
    "disagreement",          # candidates (or consecutive keyframes) give map poses that disagree: look-alikes
    "single_surface",        # the agreeing evidence rests on one plane (one picture): it may hang elsewhere
    "rate_limited",          # continuous mode: a confident fix within min_interval_sec of the last one
)


def keyframe_name(key: PoseKey) -> str:
    """"robot/session/id" of a keyframe identity (robot_id, session_id, keyframe_id)."""
    return f"{key[0]}/{key[1]}/{key[2]}"


@dataclasses.dataclass(frozen=True)
class Fix:
    """A confident pose of the robot's base frame in the map frame (geometry_msgs/PoseWithCovarianceStamped).

    stamp_ns: the image's stamp. frame_id: the map frame (``detector.map_frame``); child_frame_id:
    ``frames.base_frame``. T_map_base: (4, 4) float64. covariance: (6, 6) float64, ROS order (x, y,
    z, rot_x, rot_y, rot_z), position in the map frame, rotation about its fixed axes (map pose and
    measurement). matched_keyframes / inliers: the agreeing evidence, "robot/session/id" with its
    relative pose's inliers, the published pose's first. kind: "metric" or "single_camera".
    confirmed_by: "candidates" (two keyframes of the map) or "odometry" (an earlier keyframe).
    odom_pose: (4, 4) T_odom_base at ``stamp_ns`` when known.
    """

    stamp_ns: int
    frame_id: str
    child_frame_id: str
    T_map_base: F64
    covariance: F64
    matched_keyframes: tuple[str, ...]
    inliers: tuple[int, ...]
    kind: str
    confirmed_by: str
    odom_pose: F64 | None = None

    @property
    def position(self) -> F64:
        """(3,) x, y, z in the map frame, metres."""
        return xyz_quat(self.T_map_base)[0]

    @property
    def quaternion_xyzw(self) -> F64:
        """(4,) orientation qx, qy, qz, qw (qw >= 0)."""
        return xyz_quat(self.T_map_base)[1]

    @property
    def T_map_odom(self) -> F64 | None:
        """(4, 4) map -> odom transform, T_map_base * T_odom_base^-1, or None without odometry."""
        return None if self.odom_pose is None else self.T_map_base @ np.linalg.inv(self.odom_pose)


@dataclasses.dataclass(frozen=True)
class Refusal:
    """No fix for the keyframe at ``stamp_ns``: ``reason`` (one of REFUSAL_REASONS), ``detail`` for
    people, and the matched keyframes ("robot/session/id") the decision was about."""

    stamp_ns: int
    reason: str
    detail: str
    matched_keyframes: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class _Past:
    """A previous keyframe's best hypothesis and its odometry pose (for confirmation by odometry)."""

    odom: F64
    best: Hypothesis


class Relocalizer:
    """Turns a detector's steps into fixes in the map loaded into it (see the module docstring).

    map_poses: the loaded map's keyframe poses (``map.map_poses.map_poses``); None: the detector's
    (``keyframe_map_poses``: optimised where the map has them, else the map session's odometry poses),
    read now: call :meth:`set_map_poses` after loading another map or storing optimised poses.
    base_from_camera: (4, 4) T_base_camera (e.g. from TF); None: ``frames.base_from_camera``.
    """

    def __init__(self, config: Config, detector: LoopClosureDetector,
                 map_poses: Mapping[PoseKey, MapPose] | None = None, base_from_camera: F64 | None = None) -> None:
        self.config = config
        self.detector = detector
        self._geometry = LoopGeometry(config.geometry, detector.model)
        self.base_from_camera = base_from_camera_matrix(config.frames) if base_from_camera is None else \
            np.asarray(base_from_camera, np.float64)
        self.set_map_poses(detector.keyframe_map_poses() if map_poses is None else map_poses)
        self.counts: dict[str, int] = {"fixes": 0, **{r: 0 for r in REFUSAL_REASONS}}
        self._drift = OdometryDrift()
        self.reset()

    def set_map_poses(self, map_poses: Mapping[PoseKey, MapPose]) -> None:
        """Replace the map poses (a map loaded later, optimised poses arrived). A candidate counts
        when it belongs to a session of these poses."""
        self.map_poses = dict(map_poses)
        self._sessions = {(k[0], k[1]) for k in self.map_poses}

    def reset(self) -> None:
        """Forget the history of earlier keyframes and the mode's state (requests, last fix)."""
        self._past: collections.deque[_Past | None] = collections.deque(maxlen=self.config.relocalization.odometry_window)
        self._pending = self.config.relocalization.mode == "once"
        self._last_fix_ns: int | None = None

    def request(self) -> None:
        """Ask for the next confident fix (on_demand; in once mode, one more)."""
        if not self._pending:
            self._past.clear()  # evidence from before the request may be stale (the robot was carried)
        self._pending = True

    @property
    def pending(self) -> bool:
        """Whether a fix is wanted now (always in continuous mode)."""
        return self.config.relocalization.mode == "continuous" or self._pending

    def step(self, result: StepResult, odom_pose: npt.ArrayLike | None = None) -> Fix | Refusal | None:
        """The decision for one detector step. odom_pose: (4, 4) T_odom_base at the image's stamp;
        None: the keyframe's odometry pose moved to the base frame. None is returned when there is
        nothing to say: relocalisation off or not wanted now, not a keyframe, no accepted candidate
        of a loaded map."""
        cfg = self.config.relocalization
        kf = result.keyframe
        if not cfg.enabled or kf is None or not self.pending:
            return None
        keys = [v.candidate.keyframe_id for v in result.verifications if v.accepted]
        keys = [k for k in keys if self._from_map(self.detector.keyframe(k))][:cfg.max_candidates]
        T_body_base = self._body_base(kf)
        odom = self._odom(kf, odom_pose, T_body_base)
        if not keys:
            self._past.append(None)
            return None
        outcome = self._decide(kf, keys, T_body_base, odom)
        if isinstance(outcome, Refusal):
            self.counts[outcome.reason] += 1
        else:
            self.counts["fixes"] += 1
        return outcome

    # -- internals ----------------------------------------------------------------------------
    def _from_map(self, kf: Keyframe) -> bool:
        det = self.detector.config.detector
        own = kf.robot_id == det.robot_id and kf.session_id == det.session_id
        return not own and (kf.robot_id, kf.session_id) in self._sessions

    def _body_base(self, kf: Keyframe) -> F64:
        """T_body_base of the query: its geometry's T_body_cam times T_camera_base."""
        T_body_cam = np.eye(4) if kf.geometry is None else np.asarray(kf.geometry.T_body_cam, np.float64)
        return T_body_cam @ np.linalg.inv(self.base_from_camera)

    @staticmethod
    def _odom(kf: Keyframe, odom_pose: npt.ArrayLike | None, T_body_base: F64) -> F64 | None:
        if odom_pose is not None:
            return np.asarray(odom_pose, np.float64)
        return None if kf.pose is None else np.asarray(kf.pose, np.float64) @ T_body_base

    def _decide(self, kf: Keyframe, keys: list[int], T_body_base: F64, odom: F64 | None) -> Fix | Refusal:
        cfg = self.config.relocalization
        stamp = int(kf.stamp_ns)
        names, found, reasons = [], [], []
        for key in keys:
            match = self.detector.keyframe(key)
            name = keyframe_name(pose_key(match))
            names.append(name)
            mp = self.map_poses.get(pose_key(match))
            if mp is None:
                reasons.append(f"{name}: no map pose")
                continue
            est = self._geometry.estimate(kf, self.detector.keyframe_with_local(key))
            geometry = match.geometry
            h = None if est is None else hypothesis(est, mp, T_body_base, name, cfg.single_camera_sigma_m,
                                                  cfg.map_pose_covariance == "map",
                                                  None if geometry is None else geometry.T_body_cam)
            if h is None:
                reasons.append(f"{name}: {'no geometry (calibration/features)' if est is None else est.reason}")
            else:
                found.append(h)
        refusal = self._check_found(stamp, found, reasons, tuple(names))
        if refusal is not None:
            self._past.append(None)
            return refusal
        usable = self._within_bounds(found)
        if not usable:
            self._past.append(None)
            worst = ", ".join(f"{h.keyframe}: {h.sigmas[0]:.3f} m / {np.degrees(h.sigmas[1]):.2f} deg" for h in found)
            return Refusal(stamp, "covariance_too_large", f"measured sigmas above the bound ({worst})", tuple(names))
        best = usable[0]
        others = usable[1:]
        disagree = [why for h in others for ok, why in [agreement(best, h, None, cfg)] if not ok]
        if disagree:
            self._past.append(None)
            return Refusal(stamp, "disagreement", "; ".join(disagree), tuple(names))
        confirming = [h for h in others if h.kind == best.kind]  # a rotation alone does not confirm a position
        earlier, why = self._by_odometry(best, odom)
        self._past.append(None if odom is None else _Past(odom, best))
        if confirming:
            confirmed_by, evidence = "candidates", [best, *confirming]
        elif earlier:
            confirmed_by, evidence = "odometry", [best, earlier.pop(0)]
        else:
            if why:
                return Refusal(stamp, "disagreement", f"earlier keyframes through odometry: {why}", tuple(names))
            return Refusal(stamp, "unconfirmed", "one matched keyframe gave a pose; waiting for a second "
                           "candidate or the next keyframe", tuple(names))
        planes = self._surfaces(evidence, earlier)
        if planes is not None:
            return Refusal(stamp, "single_surface", f"the agreeing evidence rests on {planes} plane(s) of the map, "
                           f"{cfg.min_surfaces} needed: waiting for a view of another surface", tuple(names))
        if cfg.mode == "continuous" and self._last_fix_ns is not None and \
                stamp - self._last_fix_ns < round(cfg.min_interval_sec * 1e9):
            return Refusal(stamp, "rate_limited", f"last fix {(stamp - self._last_fix_ns) / 1e9:.2f} s ago",
                           tuple(names))
        self._last_fix_ns = stamp
        if cfg.mode != "continuous":
            self._pending = False
        ordered = [best] + [h for h in evidence if h is not best]
        return Fix(stamp, self.detector.config.detector.map_frame, self.config.frames.base_frame,
                   best.T_map_base, best.covariance, tuple(h.keyframe for h in ordered),
                   tuple(h.inliers for h in ordered), best.kind, confirmed_by, odom)

    def _check_found(self, stamp: int, found: list[Hypothesis], reasons: list[str],
                     names: tuple[str, ...]) -> Refusal | None:
        """The refusal when no hypothesis can be used (no pose, no map pose, single camera off)."""
        if not self.config.relocalization.single_camera and found:
            metric = [h for h in found if h.kind == "metric"]
            if not metric:
                return Refusal(stamp, "single_camera_off", "only single-camera poses (no depth or stereo); set "
                               "relocalization.single_camera to publish them", names)
            found[:] = metric
        if found:
            return None
        reason = "no_map_pose" if reasons and all(r.endswith("no map pose") for r in reasons) else "no_pose"
        return Refusal(stamp, reason, "; ".join(reasons), names)

    def _within_bounds(self, found: list[Hypothesis]) -> list[Hypothesis]:
        """Hypotheses whose measured covariance is within the bounds, metric ones first, each kind most
        precise first (position; rotation for single-camera ones). The first is the published pose:
        the hypotheses are not fused, since they share the query's keypoints (correlated errors)."""
        cfg = self.config.relocalization
        out = [h for h in found if h.sigmas[1] <= np.radians(cfg.max_rotation_sigma_deg)
               and (h.kind == "single_camera" or h.sigmas[0] <= cfg.max_position_sigma_m)]
        return sorted(out, key=lambda h: (h.kind != "metric", h.sigmas[0] if h.kind == "metric" else h.sigmas[1]))

    def _surfaces(self, evidence: list[Hypothesis], earlier: list[Hypothesis]) -> int | None:
        """None when the evidence spans enough planes (rule 4; earlier agreeing keyframes are added to
        ``evidence`` until it does), else the number of planes it spans."""
        wanted = self.config.relocalization.min_surfaces
        if wanted <= 1 or evidence[0].kind != "metric":
            return None
        planes = count_surfaces([h.support for h in evidence], wanted)
        for past in earlier:
            if planes is None or planes >= wanted:
                break
            evidence.append(past)
            planes = count_surfaces([h.support for h in evidence], wanted)
        return None if planes is None or planes >= wanted else planes

    def _by_odometry(self, current: Hypothesis, odom: F64 | None) -> tuple[list[Hypothesis], str]:
        """(the earlier keyframes' hypotheses that agree with ``current`` once carried forward by
        odometry, newest first; why the others disagree)."""
        if odom is None:
            return [], ""
        why, agreeing = [], []
        for past in reversed(self._past):
            if past is None:
                continue
            step = np.linalg.solve(past.odom, odom)
            T, cov = compose_map_pose(past.best.T_map_base, past.best.measurement, step,
                                      self._drift.step_covariance(step))
            carried = dataclasses.replace(past.best, T_map_base=T)
            ok, reason = agreement(current, carried, cov, self.config.relocalization)
            if ok:
                agreeing.append(past.best)
            else:
                why.append(reason)
        return agreeing, "; ".join(why)
