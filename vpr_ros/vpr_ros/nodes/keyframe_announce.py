"""The loop-closure node's keyframe topics (vpr_ros_msgs/Keyframe), what a pose graph (pose_graph_node) or a
backend bridge needs to put a node at each keyframe.

``keyframes``: each keyframe the node makes, once, in order, as it is made, before its loops are
published. The pose is the keyframe's stored odometry pose of the base frame; ``header.frame_id`` names
the odometry frame it is in (``frames.odom_frame``). Reliable, volatile, depth 100 (as ``loop_closures``).

``map_keyframes``: the keyframes of the maps loaded into the session (``map.load_path``, ``~/load_map``,
the earlier sessions of a continued live map) that have a pose in the map frame
(``LoopClosureDetector.keyframe_map_poses``, core/map/map_poses.py): that pose, ``header.frame_id`` the
map frame (``detector.map_frame``) and its covariance in ``pose_covariance``. Each once, after the load;
a keyframe already announced (on either topic) is not announced again. Latched (reliable, transient local,
keep all), so a pose graph started later still receives the whole map. A topic of its own: backend
bridges read ``keyframes`` as the robot's own odometry keyframes (cslam takes its session from the first
one), which map keyframes are not.
"""

from __future__ import annotations

import threading
from typing import Any, Collection

from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from vpr_ros_msgs.msg import Keyframe as KeyframeMsg

from vpr_ros.core.map.map_poses import pose_key
from vpr_ros.core.types import Keyframe
from vpr_ros.nodes.pose_graph_msgs import keyframe_to_msg, map_keyframe_msg

__all__ = ["KeyframeAnnouncer", "KEYFRAME_QOS", "MAP_KEYFRAME_QOS", "map_keyframe_msgs"]

KEYFRAME_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE)
MAP_KEYFRAME_QOS = QoSProfile(history=HistoryPolicy.KEEP_ALL, reliability=ReliabilityPolicy.RELIABLE,
                              durability=DurabilityPolicy.TRANSIENT_LOCAL)


def map_keyframe_msgs(detector: Any, map_frame: str, skip: Collection[tuple[str, str, int]]
                      ) -> list[tuple[tuple[str, str, int], KeyframeMsg]]:
    """(key, message) of every keyframe of ``detector`` with a map pose, but those in ``skip`` and those of
    its own session (they go on ``keyframes``), by key; the caller holds the detector's lock."""
    poses = detector.keyframe_map_poses()
    stamps = {pose_key(kf): kf.stamp_ns for kf in detector.keyframes}
    det = detector.config.detector
    live = (det.robot_id, det.session_id)
    return [(k, map_keyframe_msg(k, stamps[k], poses[k].T_map_base, poses[k].covariance, map_frame))
            for k in sorted(poses) if k not in skip and (k[0], k[1]) != live]


class KeyframeAnnouncer:
    """Publishes each new keyframe on ``keyframes`` (one line in the node: ``announce(kf)``) and, given the
    detector, the loaded maps' keyframes on ``map_keyframes`` at once and after each load (``announce_map``)."""

    def __init__(self, node: Node, odom_frame: str, map_frame: str = "map", detector: Any = None,
                 lock: threading.Lock | None = None) -> None:
        self._odom_frame, self._map_frame = odom_frame, map_frame
        self._detector, self._lock = detector, lock or threading.Lock()
        self._pub = node.create_publisher(KeyframeMsg, "keyframes", KEYFRAME_QOS)
        self._map_pub = node.create_publisher(KeyframeMsg, "map_keyframes", MAP_KEYFRAME_QOS)
        self._sent: set[tuple[str, str, int]] = set()
        self.announced = 0
        self.announced_map = 0
        self.announce_map()

    def announce(self, kf: Keyframe) -> None:
        self._sent.add(pose_key(kf))
        self._pub.publish(keyframe_to_msg(kf, self._odom_frame))
        self.announced += 1

    def announce_map(self) -> int:
        """Announce the map keyframes not announced yet (see the module docstring); returns how many."""
        if self._detector is None:
            return 0
        with self._lock:
            new = map_keyframe_msgs(self._detector, self._map_frame, self._sent)
        for key, msg in new:
            self._sent.add(key)
            self._map_pub.publish(msg)
        self.announced_map += len(new)
        return len(new)
