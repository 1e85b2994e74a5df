"""The loop-closure node's side of the live pose graph: optimised keyframe poses from ``pose_graph_node``
(vpr_ros_msgs/KeyframePoses on ``keyframe_poses``) into the detector's map, so relocalisation in it uses
them (``LoopClosureDetector.store_optimized_poses``, core/map/map_poses.py; the detector queues them into
the live map it owns).

The map frame of the detector is the odometry frame of its *frame session* (the first keyframe's robot
and session, core/map/map_poses.py). The pose graph's map frame is anchored at the first keyframe of
its anchor stream, which for another robot's graph (joined in the lowest robot id's frame) is not this
map's; so every message is re-expressed in this map's frame through the frame session's first keyframe:
``T_fix = T_odom(first) @ T_graph(first)^-1`` (the identity, up to the prior's 1e-6, when the graph is
anchored there). A message without that keyframe cannot be placed and is refused with a warning.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import numpy.typing as npt
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from vpr_ros_msgs.msg import KeyframePoses

from vpr_ros.core.errors import InputError, VprError
from vpr_ros.core.map.map_poses import MapPose, PoseKey, frame_session, pose_key
from vpr_ros.core.types import Keyframe
from vpr_ros.nodes.pose_graph_msgs import keyframe_poses_from_msg

__all__ = ["OptimizedPoseSink", "POSES_QOS", "poses_in_map_frame"]

F64 = npt.NDArray[np.float64]
#: The latest poses only, kept for a late subscriber (the loop-closure node may start after the graph).
POSES_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                       durability=DurabilityPolicy.TRANSIENT_LOCAL)


def poses_in_map_frame(keyframes: Sequence[Keyframe], poses: Mapping[PoseKey, tuple[F64, F64 | None]]
                       ) -> dict[PoseKey, MapPose] | str:
    """The poses of ``keyframes`` re-expressed in their map frame (see the module docstring) as optimised
    MapPoses, or the reason they cannot be."""
    frame = frame_session(keyframes)
    first = min((kf for kf in keyframes if (kf.robot_id, kf.session_id) == frame and kf.pose is not None),
                key=lambda kf: kf.id, default=None)
    if first is None:
        return "the map has no keyframe with an odometry pose to define its frame"
    if pose_key(first) not in poses:
        return (f"the map frame's first keyframe {pose_key(first)} is not among the {len(poses)} poses (they are "
                "in another frame); the pose graph must hold this map's keyframes")
    T_fix = np.asarray(first.pose, np.float64) @ np.linalg.inv(poses[pose_key(first)][0])
    J = np.zeros((6, 6))
    J[:3, :3] = J[3:, 3:] = T_fix[:3, :3]
    present = {pose_key(kf) for kf in keyframes}
    out = {}
    for key, (T, cov) in poses.items():
        if key not in present:
            continue
        if cov is None:
            return "the poses carry no covariances (pose_graph_node computes them with pose_graph.poses_period_sec)"
        out[key] = MapPose(T_fix @ T, J @ cov @ J.T, "optimized")
    return out


class OptimizedPoseSink:
    """Subscribes ``keyframe_poses`` and stores the newest message's poses in the detector's map.

    The callback only keeps the message (a newer one replaces a waiting one); a thread of its own takes
    the detector's lock and stores it, so the executor never waits for a frame being processed.
    """

    def __init__(self, node: Node, detector: Any, lock: threading.Lock, warn: Callable[[str, str], None]) -> None:
        self._detector, self._lock, self._warn = detector, lock, warn
        self.stored = 0
        self.refused = 0
        self._waiting: KeyframePoses | None = None
        self._cond = threading.Condition()
        node.create_subscription(KeyframePoses, "keyframe_poses", self._on_poses, POSES_QOS)
        threading.Thread(target=self._run, name="optimized_poses", daemon=True).start()

    def _on_poses(self, msg: KeyframePoses) -> None:
        with self._cond:
            self._waiting = msg
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._waiting is not None)
                msg, self._waiting = self._waiting, None
            self.store(msg)

    def store(self, msg: KeyframePoses) -> None:
        """Store one message's poses (the thread's work; callable directly)."""
        try:
            poses = keyframe_poses_from_msg(msg)
            with self._lock:
                placed = poses_in_map_frame(self._detector.keyframes, poses)
                if not isinstance(placed, str):
                    self._detector.store_optimized_poses(placed, f"live pose graph ({msg.header.frame_id})")
        except (InputError, VprError) as exc:
            placed = str(exc)
        if isinstance(placed, str):
            self.refused += 1
            self._warn("keyframe_poses", f"optimised keyframe poses not stored: {placed}")
            return
        self.stored += 1
