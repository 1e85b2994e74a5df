"""Configuration of frames (``frames.*``: the robot's base frame, the odometry frame and the camera's
pose on the robot) and of global relocalisation in a loaded map (``relocalization.*``). Part of
:class:`vpr_ros.core.config.Config`."""

from __future__ import annotations

import dataclasses
import math

from vpr_ros.core.config.checks import MAX_SEC, check_fields as _check_fields, meta as _meta
from vpr_ros.core.errors import ConfigError

__all__ = ["FramesConfig", "RelocalizationConfig", "RELOCALIZATION_MODES", "parse_base_from_camera"]

RELOCALIZATION_MODES = ("on_demand", "continuous", "once")
IDENTITY_POSE = "0 0 0 0 0 0 1"


def parse_base_from_camera(text: str, name: str = "frames.base_from_camera") -> tuple[float, ...]:
    """``"x y z qx qy qz qw"`` (spaces and/or commas, optional brackets) -> 7 floats with a unit
    quaternion. Raises ConfigError naming ``name`` and the expected form."""
    cleaned = str(text).strip().strip("[]()").replace(",", " ")
    form = (f"give 7 numbers 'x y z qx qy qz qw' (metres, then a quaternion), e.g. "
            f"'{IDENTITY_POSE}' for a camera at the base frame's origin")
    try:
        values = tuple(float(v) for v in cleaned.split())
    except ValueError:
        raise ConfigError(f"{name}={text!r} is not a list of numbers; {form}") from None
    if len(values) != 7:
        raise ConfigError(f"{name}={text!r} has {len(values)} number(s), not 7; {form}")
    if not all(math.isfinite(v) for v in values):
        raise ConfigError(f"{name}={text!r} holds NaN or inf; {form}")
    norm = math.sqrt(sum(v * v for v in values[3:]))
    if abs(norm - 1.0) > 1e-3:
        raise ConfigError(f"{name}={text!r}: the quaternion (qx qy qz qw) has norm {norm:.4g}, not 1; "
                          "give a unit quaternion (order x y z w, as geometry_msgs/Quaternion)")
    return values[:3] + tuple(v / norm for v in values[3:])


@dataclasses.dataclass(frozen=True)
class FramesConfig:
    """Frames of the robot: published poses are of ``base_frame``."""

    base_frame: str = dataclasses.field(default="base_link", metadata=_meta(
        "The robot's base frame: every pose vpr_ros publishes is of this frame."))
    odom_frame: str = dataclasses.field(default="odom", metadata=_meta(
        "The odometry frame (parent of base_frame in the odometry source's transform)."))
    base_from_camera: str = dataclasses.field(default=IDENTITY_POSE, metadata=_meta(
        "Pose of the camera's optical frame in base_frame, 'x y z qx qy qz qw' (metres, unit quaternion); "
        "used where TF cannot give it (vpr-ros replay and localize, nodes without tf2_ros). The identity "
        "keeps poses of the camera frame (docs/relocalization.md, Frames)."))

    def __post_init__(self) -> None:
        _check_fields(self, "frames")
        parse_base_from_camera(self.base_from_camera)
        if not self.base_frame.strip() or not self.odom_frame.strip():
            raise ConfigError("frames.base_frame and frames.odom_frame must name frames, e.g. 'base_link', 'odom'")

    @property
    def base_from_camera_values(self) -> tuple[float, ...]:
        """``base_from_camera`` as 7 floats (x, y, z, qx, qy, qz, qw), quaternion normalised."""
        return parse_base_from_camera(self.base_from_camera)


@dataclasses.dataclass(frozen=True)
class RelocalizationConfig:
    """Global relocalisation in a loaded map (docs/relocalization.md)."""

    enabled: bool = dataclasses.field(default=True, metadata=_meta(
        "Turn matches against a loaded map into the robot's pose in the map frame."))
    mode: str = dataclasses.field(default="on_demand", metadata=_meta(
        "on_demand: publish the first confident fix after a request (~/relocalize, trigger topic); "
        "continuous: every confident fix, at most one per relocalization.min_interval_sec; once: the first "
        "confident fix after start.", choices=RELOCALIZATION_MODES))
    min_interval_sec: float = dataclasses.field(default=1.0, metadata=_meta(
        "continuous mode: at least this long between published fixes (image stamps), seconds.",
        lo=0.0, hi=MAX_SEC))
    publish_tf: bool = dataclasses.field(default=False, metadata=_meta(
        "Node: broadcast map -> odom on /tf with each published fix (for stacks without a localiser)."))
    single_camera: bool = dataclasses.field(default=False, metadata=_meta(
        "Publish single-camera fixes (no depth or stereo): rotation measured, position that of the matched "
        "keyframe with relocalization.single_camera_sigma_m of uncertainty. Off: only metric fixes."))
    single_camera_sigma_m: float = dataclasses.field(default=2.0, metadata=_meta(
        "Position standard deviation of a single-camera fix (how far from a matched keyframe a camera "
        "still sees the same place), metres.", lo=0.01, hi=1000.0))
    max_candidates: int = dataclasses.field(default=3, metadata=_meta(
        "Accepted candidates of loaded maps (best verified first) whose relative poses are measured per "
        "keyframe.", lo=1, hi=50))
    max_position_sigma_m: float = dataclasses.field(default=0.25, metadata=_meta(
        "A metric fix is refused when its position standard deviation (largest axis) exceeds this, metres.",
        lo=0.001, hi=1000.0))
    max_rotation_sigma_deg: float = dataclasses.field(default=5.0, metadata=_meta(
        "A fix is refused when its rotation standard deviation (largest axis) exceeds this, degrees.",
        lo=0.01, hi=180.0))
    agree_mahalanobis: float = dataclasses.field(default=16.8, metadata=_meta(
        "Two map poses agree only when the squared Mahalanobis distance of their difference (6 dof, both "
        "measured covariances) is below this (16.8: chi-square 99 %), and the two limits below hold.",
        lo=0.1, hi=1000.0))
    agree_position_m: float = dataclasses.field(default=0.3, metadata=_meta(
        "Two map poses agree only when their positions differ by less than this, metres.", lo=0.001, hi=1000.0))
    agree_rotation_deg: float = dataclasses.field(default=5.0, metadata=_meta(
        "Two map poses agree only when their rotations differ by less than this, degrees.", lo=0.01, hi=180.0))
    map_pose_covariance: str = dataclasses.field(default="local", metadata=_meta(
        "What a fix's covariance is relative to. local: the matched keyframe's stored map pose (the map frame "
        "is what the stored poses say, as for a grid or cloud built with them): the measurement's covariance "
        "only. map: also the stored pose's own uncertainty (odometry drift from the map's first keyframe, or "
        "the pose graph's marginal), for consumers that fuse the fix with world-referenced sources.",
        choices=("local", "map")))
    odometry_window: int = dataclasses.field(default=2, metadata=_meta(
        "A keyframe's map pose may be confirmed by one of this many previous keyframes' map poses carried "
        "forward by odometry (0: only agreeing candidates of the same keyframe confirm).", lo=0, hi=100))
    min_surfaces: int = dataclasses.field(default=2, metadata=_meta(
        "A metric fix needs the map points its agreeing evidence rests on to span this many planes "
        "(core/localization/surfaces.py): one picture seen alone may hang in a place the map never saw. "
        "1: no such check. Single-camera fixes have no points and are not checked.", lo=1, hi=3))

    def __post_init__(self) -> None:
        _check_fields(self, "relocalization")
