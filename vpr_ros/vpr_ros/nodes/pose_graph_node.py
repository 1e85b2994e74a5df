"""``pose_graph_node``: a live pose graph for robots that have only odometry (docs/pose_graph.md).

Subscribes to keyframes (vpr_ros_msgs/Keyframe, ``pose_graph.keyframe_topics``), loaded maps' keyframes
(vpr_ros_msgs/Keyframe in the map frame with covariances, latched, ``pose_graph.map_keyframe_topics``), loop closures
(vpr_ros_msgs/LoopClosure, ``pose_graph.loop_topics``: own, loaded maps', other robots') and odometry
(nav_msgs/Odometry on ``odom``, any source: it names the odometry frame and gives a pose to keyframes
announced without one). Each message goes into :class:`vpr_ros.core.geometry.live_pose_graph.LivePoseGraph`
and is optimised at once (iSAM2; the batch solver at its interval). Publishes:

* map -> odom of every robot on ``/tf`` (``tf2_ros.TransformBroadcaster`` where importable, else a
  tf2_msgs/TFMessage publisher), ``T_map_odom = T_map_base(optimised) @ T_odom_base^-1`` at the robot's
  newest keyframe, every ``pose_graph.tf_period_sec``, stamped that far ahead (a transform tolerance);
* ``optimized_path`` (nav_msgs/Path): the own robot's keyframes in the map frame;
* ``keyframe_poses`` (vpr_ros_msgs/KeyframePoses): every keyframe of the own robot's graph with its
  marginal covariance, which the loop-closure node stores in its map (nodes/optimized_poses.py);
* ``diagnostics``: the graph's statistics and every refusal counted.

Frames: the own robot's graph is published in ``pose_graph.map_frame``; a graph of other robots not yet
joined to it in ``<anchor robot>/<map_frame>``. With a loaded map, ``map_frame`` is the map's frame from the
join of the own robot's graph with the map on (loops into the map that agree, ``pose_graph.join_min_loops``);
before it, the robot's odometry frame at its first keyframe, so map -> odom jumps at that join, as at a
relocalisation. Robots whose odometry frame is unknown or shared
with the own robot or an earlier one get no transform (counted).
"""

from __future__ import annotations

import collections
import sys
import time
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from nav_msgs.msg import Odometry, Path
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from vpr_ros_msgs.msg import Keyframe as KeyframeMsg
from vpr_ros_msgs.msg import KeyframePoses
from vpr_ros_msgs.msg import LoopClosure as LoopClosureMsg

from vpr_ros.core.config import Config, config_from_flat, flat_field_specs
from vpr_ros.core.errors import ConfigError, InputError, VprError
from vpr_ros.core.map.map_poses import covariance_from_tangent
from vpr_ros.nodes.conversions import odometry_to_pose, stamp_to_ns
from vpr_ros.nodes.input_watch import run_node
from vpr_ros.nodes.keyframe_announce import MAP_KEYFRAME_QOS
from vpr_ros.nodes.odom_buffer import OdomBuffer
from vpr_ros.nodes.optimized_poses import POSES_QOS
from vpr_ros.nodes.params import parameter_descriptor
from vpr_ros.nodes.pose_graph_msgs import (keyframe_from_msg, keyframe_poses_msg, loop_from_msg, map_keyframe_from_msg,
                                          path_msg)
from vpr_ros.nodes.pose_graph_tf import TfSender

try:  # GTSAM is an extra (requirements/gtsam.txt); without it the node says so and exits
    from vpr_ros.core.geometry.live_pose_graph import LivePoseGraph
except ImportError as _exc:
    LivePoseGraph = None
    _GTSAM_MISSING = str(_exc)

__all__ = ["PoseGraphNode", "main", "SECTIONS", "COUNTERS"]

#: The parameter sections this node reads (a whole loop_closure.yaml may be given: the rest is ignored).
SECTIONS = ("pose_graph", "frames")
#: Diagnostics counters (each starts at 0).
COUNTERS = ("odometry_received", "loops_received", "keyframes_without_pose", "keyframes_without_covariance",
            "keyframe_poses_published", "tf_skipped", "map_keyframes_other_frame", "bad_input.odometry",
            "bad_input.keyframe", "bad_input.map_keyframe", "bad_input.loop")
INPUT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1000, reliability=ReliabilityPolicy.RELIABLE)
_LATENCY_SAMPLES = 512


def declare_pose_graph_parameters(node: Node) -> Config:
    """Declare ``pose_graph.*`` and ``frames.*``; ConfigError naming a bad value or an unknown name there."""
    specs = [s for s in flat_field_specs() if s.name.split(".")[0] in SECTIONS]
    values = {}
    for spec in specs:
        try:
            values[spec.name] = node.declare_parameter(spec.name, spec.default, parameter_descriptor(spec)).value
        except Exception as exc:  # rclpy's InvalidParameter*Exception: one message naming the parameter
            raise ConfigError(f"parameter {spec.name}: {exc}") from None
    known = {s.name for s in specs}
    unknown = sorted(n for n in (getattr(node, "_parameter_overrides", {}) or {})
                     if n.split(".")[0] in SECTIONS and n not in known)
    if unknown:
        raise ConfigError(f"unknown parameter(s) {', '.join(unknown)}; see pose_graph.* in docs/ros2.md")
    return config_from_flat(values)


class PoseGraphNode(Node):
    """ROS 2 node around one LivePoseGraph (see the module docstring)."""

    def __init__(self, *, node_name: str = "pose_graph_node", **node_kwargs: Any) -> None:
        super().__init__(node_name, **node_kwargs)
        if LivePoseGraph is None:
            raise VprError(f"pose_graph_node needs GTSAM ({_GTSAM_MISSING}): pip install -r requirements/gtsam.txt")
        config = declare_pose_graph_parameters(self)
        self.config, self.frames = config.pose_graph, config.frames
        self.graph = LivePoseGraph(self.config)
        self.home = self.config.robot_id           # "" until the first keyframe names it
        self._odom = OdomBuffer(max_age_sec=0.2, wait_sec=0.0, size=2000)
        self._odom_frame = ""                      # header.frame_id of the odometry messages
        self.counts: collections.Counter[str] = collections.Counter({k: 0 for k in COUNTERS})
        self._latency: collections.deque[float] = collections.deque(maxlen=_LATENCY_SAMPLES)
        self._changed_path = self._changed_poses = False
        self._last_poses = -1e18
        self._rejected = 0
        self._last_warn: dict[str, float] = {}
        self.create_subscription(Odometry, "odom", self._on_odom, qos_profile_sensor_data)
        for topic in self.config.keyframe_topic_list:
            self.create_subscription(KeyframeMsg, topic, self._on_keyframe, INPUT_QOS)
        for topic in self.config.map_keyframe_topic_list:
            self.create_subscription(KeyframeMsg, topic, self._on_map_keyframe, MAP_KEYFRAME_QOS)
        for topic in self.config.loop_topic_list:
            self.create_subscription(LoopClosureMsg, topic, self._on_loop, INPUT_QOS)
        self._tf = TfSender(self, self._warn)
        self._path_pub = self.create_publisher(Path, "optimized_path", 2)
        self._poses_pub = self.create_publisher(KeyframePoses, "keyframe_poses", POSES_QOS)
        self._diag_pub = self.create_publisher(DiagnosticArray, "diagnostics", 10)
        self.create_timer(self.config.tf_period_sec, self._publish_tf)
        self.create_timer(self.config.publish_period_sec, self._publish)
        self.get_logger().info(
            f"ready: {self.config.solver} solver, robust {self.config.robust}, keyframes from "
            f"{', '.join(self.resolve_topic_name(t) for t in self.config.keyframe_topic_list)}, loops from "
            f"{', '.join(self.resolve_topic_name(t) for t in self.config.loop_topic_list)}, tf via {self._tf.mode}")

    # -- inputs ------------------------------------------------------------------------------
    def _on_odom(self, msg: Odometry) -> None:
        self.counts["odometry_received"] += 1
        try:
            self._odom.add(stamp_to_ns(msg.header.stamp), odometry_to_pose(msg))
        except InputError as exc:
            self._bad("odometry", exc)
            return
        self._odom_frame = msg.header.frame_id or self._odom_frame

    def _on_keyframe(self, msg: KeyframeMsg) -> None:
        try:
            key, stamp, pose, frame = keyframe_from_msg(msg)
        except InputError as exc:
            self._bad("keyframe", exc)
            return
        self.home = self.home or key[0]
        if pose is None and key[0] == self.home:
            pose, frame = self._odom.pose_at(stamp), self._odom_frame
        if pose is None:
            self.counts["keyframes_without_pose"] += 1
            self._warn("no_pose", f"keyframe {key} has no pose (no odometry at its stamp): not in the graph")
            return
        if key[0] == self.home and self._odom_frame:
            frame = self._odom_frame  # this node's odometry names the frame authoritatively
        self.graph.add_keyframe(key, stamp, pose, frame or self.frames.odom_frame)
        self._update()

    def _on_map_keyframe(self, msg: KeyframeMsg) -> None:
        try:
            key, stamp, pose, cov, frame = map_keyframe_from_msg(msg)
            self.graph.add_map_keyframe(key, stamp, pose, cov)
        except InputError as exc:
            self._bad("map_keyframe", exc)
            return
        if frame != self.config.map_frame:  # still the map's frame: the names disagree, not the poses
            self.counts["map_keyframes_other_frame"] += 1
            self._warn("map_frame", f"map keyframes come in frame {frame!r}, this graph publishes its map as "
                                    f"{self.config.map_frame!r}: set pose_graph.map_frame and detector.map_frame alike")
        self._update()

    def _on_loop(self, msg: LoopClosureMsg) -> None:
        try:
            loop = loop_from_msg(msg)
        except InputError as exc:
            self._bad("loop", exc)
            return
        self.counts["loops_received"] += 1
        self.graph.add_loop(loop)
        self._update()

    def _update(self, force: bool = False) -> None:
        t0 = time.perf_counter()
        if self.graph.update(force):
            self._latency.append((time.perf_counter() - t0) * 1e3)
            self._changed_path = self._changed_poses = True

    # -- outputs -----------------------------------------------------------------------------
    def map_frame_of(self, anchor: tuple[str, str]) -> str:
        """The map frame name of the graph anchored at ``anchor`` (see the module docstring)."""
        home_anchor = self._home_anchor()
        return self.config.map_frame if anchor == home_anchor else f"{anchor[0]}/{self.config.map_frame}"

    def _home_anchor(self) -> tuple[str, str] | None:
        return self.graph.robot_anchor(self.home)

    def _publish_tf(self) -> None:
        # The own robot first: another robot whose keyframes name the same odometry frame is the one left out.
        frames = sorted(self.graph.robot_frames(), key=lambda f: f.robot_id != self.home)
        stamp = self.get_clock().now().nanoseconds + int(self.config.tf_period_sec * 1e9)
        sent, children = [], set()
        for f in frames:
            child = self._odom_frame if f.robot_id == self.home and self._odom_frame else f.odom_frame
            if not child or child in children:
                self.counts["tf_skipped"] += 1
                continue
            children.add(child)
            sent.append((f.T_map_odom, self.map_frame_of(f.anchor), child))
        self._tf.send(sent, stamp)

    def _publish(self) -> None:
        if self.config.solver == "batch":
            self._update(force=True)
        anchor = self._home_anchor()
        now = self.get_clock().now().nanoseconds
        if anchor is not None and self._changed_path:
            self._changed_path = False
            keys, poses, stamps = self.graph.keys(), self.graph.poses(), self.graph.stamps()
            own = [n for n in self.graph.nodes_of(anchor) if keys[n][0] == self.home and not self.graph.is_map(keys[n])]
            self._path_pub.publish(path_msg(poses[own], [stamps[n] for n in own], self.map_frame_of(anchor), now))
        if anchor is not None and self._changed_poses and time.monotonic() - self._last_poses >= \
                self.config.poses_period_sec:
            self._publish_poses(anchor)
        self._diag_pub.publish(self._diagnostics(now))

    def _publish_poses(self, anchor: tuple[str, str]) -> None:
        self._changed_poses, self._last_poses = False, time.monotonic()
        nodes = self.graph.nodes_of(anchor)
        keys, poses, stamps = self.graph.keys(), self.graph.poses()[nodes], self.graph.stamps()
        tangent = self.graph.marginal_covariances(nodes)
        ok = np.isfinite(tangent).all(axis=(1, 2))
        covs = np.stack([covariance_from_tangent(T, c) for T, c in zip(poses[ok], tangent[ok])]) if ok.any() else None
        self.counts["keyframes_without_covariance"] += int((~ok).sum())
        self._rejected = self.graph.stats(with_weights=True).loops_rejected
        self._poses_pub.publish(keyframe_poses_msg(
            [keys[n] for n, good in zip(nodes, ok) if good], poses[ok], covs, self.map_frame_of(anchor),
            max(stamps[n] for n in nodes), anchor))
        self.counts["keyframe_poses_published"] += 1

    def _diagnostics(self, now_ns: int) -> DiagnosticArray:
        stats = self.graph.stats(with_weights=False)
        values = {k: str(v) for k, v in vars(stats).items() if k != "loops_rejected"}
        values["loops_rejected"] = f"{self._rejected} (at the last keyframe_poses)"
        lat = np.array(self._latency) if self._latency else np.zeros(1)
        values.update(update_ms_p50=f"{np.percentile(lat, 50):.2f}", update_ms_p95=f"{np.percentile(lat, 95):.2f}",
                      robot_id=self.home, map_frame=self.config.map_frame, tf=self._tf.mode)
        values.update({k: str(v) for k, v in sorted(self.counts.items())})
        for f in self.graph.robot_frames():
            values[f"map_to_odom.{f.robot_id}"] = (f"{self.map_frame_of(f.anchor)} -> {f.odom_frame}: "
                                                   + " ".join(f"{v:.3f}" for v in f.T_map_odom[:3, 3]))
        warn = [k for k in ("loops_pending", "loops_join_waiting", "keyframes_without_pose")
                if float(values.get(k, "0")) > 0]
        status = DiagnosticStatus(level=DiagnosticStatus.WARN if warn else DiagnosticStatus.OK,
                                  name=f"{self.get_name()}: pose graph", hardware_id=self.home,
                                  message=("waiting: " + ", ".join(warn)) if warn else "ok",
                                  values=[KeyValue(key=k, value=v) for k, v in values.items()])
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        return msg

    # -- bad input ---------------------------------------------------------------------------
    def _bad(self, kind: str, exc: Exception) -> None:
        self.counts[f"bad_input.{kind}"] += 1
        self._warn(kind, f"bad input ({kind}), ignored: {exc}")

    def _warn(self, key: str, text: str) -> None:
        now = time.monotonic()
        if now - self._last_warn.get(key, -1e9) >= 5.0:
            self._last_warn[key] = now
            self.get_logger().warning(text)


def main(args: list[str] | None = None) -> int:
    """Entry point (``ros2 run vpr_ros pose_graph_node``); non-zero exit on a startup failure."""
    return run_node(PoseGraphNode, "pose_graph_node", args)


if __name__ == "__main__":
    sys.exit(main())
