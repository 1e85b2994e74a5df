"""Configuration of frames (``frames.*``: the robot's base frame, the odometry frame and the camera's
pose on the robot) and of global relocalisation in a loaded map (``relocalization.*``). Part of
:class:`vpr_ros.core.config.Config`."""

from __future__ import annotations

import dataclasses

from vpr_ros.core.config.checks import check_fields as _check_fields, meta as _meta

__all__ = ["FramesConfig", "RelocalizationConfig"]


@dataclasses.dataclass(frozen=True)
class FramesConfig:
    """Frames of the robot: published poses are of ``base_frame``."""

    base_frame: str = dataclasses.field(default="base_link", metadata=_meta(
        "The robot's base frame: every pose vpr_ros publishes is of this frame."))
    odom_frame: str = dataclasses.field(default="odom", metadata=_meta(
        "The odometry frame (parent of base_frame in the odometry source's transform)."))

    def __post_init__(self) -> None:
        _check_fields(self, "frames")


@dataclasses.dataclass(frozen=True)
class RelocalizationConfig:
    """Global relocalisation in a loaded map (docs/relocalization.md)."""

    enabled: bool = dataclasses.field(default=True, metadata=_meta(
        "Turn matches against a loaded map into the robot's pose in the map frame."))

    def __post_init__(self) -> None:
        _check_fields(self, "relocalization")
