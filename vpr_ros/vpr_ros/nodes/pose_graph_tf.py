"""map -> odom transforms of pose_graph_node on /tf: ``tf2_ros.TransformBroadcaster`` where tf2_ros is
importable (a ROS install), else a plain tf2_msgs/TFMessage publisher on /tf (what the broadcaster
does; tests use the tf2_msgs stand-in built from vpr_ros/test/interfaces/tf2_msgs). Without either the
node runs on and says so in its log and diagnostics (``tf: unavailable``)."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import numpy.typing as npt
from rclpy.node import Node

from vpr_ros.nodes.tf_frames import TF_QOS, TFMessage, matrix_to_transform, tf2_ros

__all__ = ["TfSender"]

F64 = npt.NDArray[np.float64]


class TfSender:
    """``send([(T_parent_child, parent, child), ...], stamp_ns)`` in one TFMessage; ``mode`` says how."""

    def __init__(self, node: Node, warn: Callable[[str, str], None]) -> None:
        self.sent = 0
        if tf2_ros is not None:
            self._send = tf2_ros.TransformBroadcaster(node).sendTransform  # takes a list of transforms
            self.mode = "tf2_ros"
        elif TFMessage is not None:
            pub = node.create_publisher(TFMessage, "/tf", TF_QOS)
            self._send = lambda transforms: pub.publish(TFMessage(transforms=transforms))
            self.mode = "topic"
        else:
            self._send = None
            self.mode = "unavailable"
            warn("tf", "neither tf2_ros nor tf2_msgs is importable: map -> odom is NOT broadcast (the optimised "
                       "path and keyframe poses are still published); source a ROS 2 install that has tf2_ros")

    def send(self, transforms: Sequence[tuple[F64, str, str]], stamp_ns: int) -> None:
        if self._send is None or not transforms:
            return
        self._send([matrix_to_transform(T, parent, child, stamp_ns) for T, parent, child in transforms])
        self.sent += len(transforms)
