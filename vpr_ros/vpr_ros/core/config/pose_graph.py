"""Configuration of the live pose graph (``pose_graph.*``, pose_graph_node, docs/pose_graph.md). Part of
:class:`vpr_ros.core.config.Config`.

The noise model defaults are those of the offline graph (``core/geometry/pose_graph.py``,
``PoseGraphOptions``), so ``replay --optimize`` and the node optimise the same graph.
``pose_graph_options`` in ``core/geometry/live_pose_graph.py`` turns this section into those options.
"""

from __future__ import annotations

import dataclasses

from vpr_ros.core.config.checks import MAX_COUNT, MAX_METRES, MAX_SEC, check_fields as _check_fields, meta as _meta
from vpr_ros.core.errors import ConfigError

__all__ = ["PoseGraphConfig", "SOLVERS"]

SOLVERS = ("isam2", "batch")


@dataclasses.dataclass(frozen=True)
class PoseGraphConfig:
    """The live pose graph built from odometry and loop closures."""

    robust: str = dataclasses.field(default="cauchy", metadata=_meta(
        "Robust method on loop factors: cauchy, huber, gnc (solver batch only) or none.",
        choices=("cauchy", "huber", "gnc", "none")))
    solver: str = dataclasses.field(default="isam2", metadata=_meta(
        "isam2: incremental smoothing after every keyframe and loop (ms per update, docs/pose_graph.md); "
        "batch: Levenberg-Marquardt over the whole graph every pose_graph.batch_every keyframes (seconds at "
        "10k keyframes).", choices=SOLVERS))
    batch_every: int = dataclasses.field(default=50, metadata=_meta(
        "solver batch: keyframes between two full optimisations (new loops wait for the next); keyframes "
        "in between are chained on odometry; the node also optimises at each publish period.", lo=1, hi=MAX_COUNT))
    relinearize_threshold: float = dataclasses.field(default=0.01, metadata=_meta(
        "solver isam2: a variable is relinearised when its update exceeds this (rad or m).", lo=1e-6, hi=10.0))
    loop_iterations: int = dataclasses.field(default=2, metadata=_meta(
        "solver isam2: extra iterations after an update that added loops (robust kernels need a few "
        "to settle on a new loop).", lo=0, hi=100))
    kernel_width: float = dataclasses.field(default=1.0, metadata=_meta(
        "Cauchy/Huber kernel width on loop factors, in standard deviations.", lo=0.01, hi=100.0))
    odometry_translation_drift: float = dataclasses.field(default=0.05, metadata=_meta(
        "Odometry position standard deviation after 1 m travelled, metres (a random walk: grows with "
        "the square root of the distance).", lo=1e-6, hi=MAX_METRES))
    odometry_heading_deg_per_m: float = dataclasses.field(default=0.3, metadata=_meta(
        "Odometry rotation standard deviation after 1 m travelled, degrees (random walk).", lo=1e-6, hi=180.0))
    same_place_sigma_m: float = dataclasses.field(default=1.5, metadata=_meta(
        "Loop without a measured pose (appearance only): how far apart the two keyframes may be, metres "
        "(standard deviation of an identity transform).", lo=1e-3, hi=MAX_METRES))
    same_place_sigma_deg: float = dataclasses.field(default=10.0, metadata=_meta(
        "Loop without a measured pose: how differently the two keyframes may be turned, degrees.",
        lo=1e-3, hi=180.0))
    max_pending_loops: int = dataclasses.field(default=1000, metadata=_meta(
        "Loops waiting for a keyframe not yet announced (another topic, another robot); the oldest is "
        "dropped and counted beyond this.", lo=0, hi=MAX_COUNT))
    join_min_loops: int = dataclasses.field(default=2, metadata=_meta(
        "Loops that must agree on where one graph lies in the other before two graphs (robots, or a robot "
        "and a loaded map) are joined; loops between them wait until then. 1: the first loop joins them "
        "(a single wrong loop then misplaces a whole robot).", lo=1, hi=100))
    join_max_position_m: float = dataclasses.field(default=1.0, metadata=_meta(
        "Two loops agree on a join when each one's placement of the other graph puts the other loop's "
        "keyframe within this distance of where that loop puts it, metres.", lo=1e-3, hi=MAX_METRES))
    join_max_rotation_deg: float = dataclasses.field(default=5.0, metadata=_meta(
        "... and the two placements differ by at most this rotation, degrees.", lo=0.01, hi=180.0))
    join_max_waiting_loops: int = dataclasses.field(default=50, metadata=_meta(
        "Loops waiting for a join, per pair of graphs; the oldest is dropped and counted beyond this.",
        lo=1, hi=10_000))
    robot_id: str = dataclasses.field(default="", metadata=_meta(
        "Node: the robot whose odometry arrives on 'odom' and whose map->odom the node publishes first; "
        "empty: the robot of the first keyframe received."))
    map_frame: str = dataclasses.field(default="map", metadata=_meta(
        "Node: the map frame of the graph that holds pose_graph.robot_id; a graph of other robots not yet "
        "joined to it by a loop is published as '<its anchor robot id>/<map_frame>'."))
    keyframe_topics: str = dataclasses.field(default="keyframes", metadata=_meta(
        "Node: vpr_ros_msgs/Keyframe topics, separated by commas (own 'keyframes'; other robots' e.g. "
        "'/robot2/keyframes' to join their graphs)."))
    map_keyframe_topics: str = dataclasses.field(default="map_keyframes", metadata=_meta(
        "Node: vpr_ros_msgs/Keyframe topics of loaded maps' keyframes (poses in the map frame with "
        "covariances; latched, from the loop-closure node), separated by commas; empty: none."))
    loop_topics: str = dataclasses.field(default="loop_closures", metadata=_meta(
        "Node: vpr_ros_msgs/LoopClosure topics, separated by commas (own, loaded maps' and other robots' "
        "loops; a loop received twice is used once)."))
    tf_period_sec: float = dataclasses.field(default=0.05, metadata=_meta(
        "Node: period of the map->odom transforms on /tf, seconds.", lo=0.001, hi=MAX_SEC))
    publish_period_sec: float = dataclasses.field(default=1.0, metadata=_meta(
        "Node: period of the optimised path and the diagnostics, seconds (only after a change "
        "for the path).", lo=0.01, hi=MAX_SEC))
    poses_period_sec: float = dataclasses.field(default=30.0, metadata=_meta(
        "Node: period of 'keyframe_poses' (every keyframe of the own robot's graph with its marginal "
        "covariance, about 0.15 ms per keyframe at 1k keyframes, which the node spends at once; stored in the "
        "loop-closure node's map), seconds, after a change only.", lo=0.01, hi=MAX_SEC))

    def __post_init__(self) -> None:
        _check_fields(self, "pose_graph")
        if self.solver == "isam2" and self.robust == "gnc":
            raise ConfigError("pose_graph.robust=gnc needs pose_graph.solver=batch (GNC re-solves the whole "
                              "graph); with isam2 choose cauchy, huber or none")

    @property
    def keyframe_topic_list(self) -> tuple[str, ...]:
        """``keyframe_topics`` split at commas."""
        return tuple(t.strip() for t in self.keyframe_topics.split(",") if t.strip())

    @property
    def map_keyframe_topic_list(self) -> tuple[str, ...]:
        """``map_keyframe_topics`` split at commas."""
        return tuple(t.strip() for t in self.map_keyframe_topics.split(",") if t.strip())

    @property
    def loop_topic_list(self) -> tuple[str, ...]:
        """``loop_topics`` split at commas."""
        return tuple(t.strip() for t in self.loop_topics.split(",") if t.strip())
