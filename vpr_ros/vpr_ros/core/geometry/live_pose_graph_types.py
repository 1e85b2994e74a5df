"""The data the live pose graph (core/geometry/live_pose_graph.py) takes and gives, without GTSAM, so
message conversions (nodes/pose_graph_msgs.py) need no GTSAM: the loop-closure node imports them."""

from __future__ import annotations

import dataclasses

import numpy as np
import numpy.typing as npt

__all__ = ["KeyframeKey", "StreamKey", "LoopInput", "RobotFrame", "GraphStats"]

F64 = npt.NDArray[np.float64]
KeyframeKey = tuple[str, str, int]   # (robot_id, session_id, keyframe_id)
StreamKey = tuple[str, str]           # (robot_id, session_id)


@dataclasses.dataclass(frozen=True)
class LoopInput:
    """A loop between keyframes ``query`` and ``match`` (keys); relative_pose (4, 4) T_match_query or
    None (appearance only); covariance (6, 6) ROS layout [x, y, z, rx, ry, rz] or None."""

    query: KeyframeKey
    match: KeyframeKey
    relative_pose: F64 | None = None
    covariance: F64 | None = None
    translation_scale_known: bool = True


@dataclasses.dataclass(frozen=True)
class RobotFrame:
    """Where a robot is: its newest stream's map frame (named by its anchor robot and session) and
    ``T_map_odom`` (4, 4) at its newest keyframe."""

    robot_id: str
    session_id: str
    anchor: StreamKey
    odom_frame: str
    stamp_ns: int
    T_map_odom: F64


@dataclasses.dataclass(frozen=True)
class GraphStats:
    """Counts of the graph and of what it refused (each refusal has its counter)."""

    solver: str
    keyframes: int
    streams: int
    components: int
    odometry_factors: int
    loop_factors: int
    loops_rejected: int          # loop factors down-weighted below 0.5 by the robust kernel
    loops_pending: int           # waiting for a keyframe not yet received
    loops_dropped: int           # pending loops dropped (max_pending_loops)
    loops_duplicate: int
    loops_invalid: int           # a loop of a keyframe with itself
    keyframes_duplicate: int
    keyframes_out_of_order: int  # older than the stream's newest keyframe: not added
    joins: int
    updates: int
    last_update_ms: float
    map_keyframes: int = 0           # keyframes of loaded maps (a prior at their map pose each)
    keyframes_map_conflict: int = 0  # a map keyframe of an odometry stream or the other way round: not added
    loops_join_waiting: int = 0      # loops between graphs not yet joined, waiting for agreeing loops
    loops_join_refused: int = 0      # disagreed with the loops that joined their graphs: left out
    loops_join_dropped: int = 0      # waiting loops dropped (join_max_waiting_loops)
