"""The loop-closure node's ``keyframes`` topic (vpr_ros_msgs/Keyframe): each keyframe announced once, in
order, as it is made, before its loops are published, so a pose graph (pose_graph_node) or a backend
bridge can put a node at it. Reliable, volatile, depth 100 (as ``loop_closures``).

The pose is the keyframe's stored odometry pose of the base frame; ``header.frame_id`` names the
odometry frame it is in (``frames.odom_frame``).
"""

from __future__ import annotations

from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from vpr_ros_msgs.msg import Keyframe as KeyframeMsg

from vpr_ros.core.types import Keyframe
from vpr_ros.nodes.pose_graph_msgs import keyframe_to_msg

__all__ = ["KeyframeAnnouncer", "KEYFRAME_QOS"]

KEYFRAME_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE)


class KeyframeAnnouncer:
    """Publishes each new keyframe on ``keyframes`` (one line in the node: ``announce(kf)``)."""

    def __init__(self, node: Node, odom_frame: str) -> None:
        self._odom_frame = odom_frame
        self._pub = node.create_publisher(KeyframeMsg, "keyframes", KEYFRAME_QOS)
        self.announced = 0

    def announce(self, kf: Keyframe) -> None:
        self._pub.publish(keyframe_to_msg(kf, self._odom_frame))
        self.announced += 1
