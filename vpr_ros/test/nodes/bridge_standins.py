"""The world of the bridge tests and stand-ins for the backends' ROS nodes.

The stand-ins use the interface packages built from the peers' documented field lists
(vpr_ros/test/interfaces/: rtabmap_msgs, cslam_common_interfaces, pose_graph_tools_msgs; their type
hashes are checked against the real packages' in test_bridges.py). ``RtabmapStandIn`` plays what the
bridge sees of RTAB-Map's ``rtabmap`` node: it publishes ``mapData`` (nodes with stamps and odometry
poses) and periodic ``mapGraph``s, and serves ``add_link``, keeping a link in its graphs unless its
``to`` node is in ``reject_to`` (as RTAB-Map drops a link that fails ``RGBD/OptimizeMaxError``).
``Recorder`` records whatever arrives on the topics it is given.

World (SIMULATED): robot1 drives a circle; odometry is exact, so a keyframe, an RTAB-Map node and
an odometry message at the same stamp have the same pose. Keyframe k is at T0 + 10 k s; RTAB-Map
node 100 + k is 0.2 s after keyframe k (k <= 5; keyframe 6 has no node).
"""

from __future__ import annotations

from typing import Any

import gtsam
import numpy as np
from rclpy.node import Node

from vpr_ros.nodes.conversions import matrix_to_pose_msg

T0_NS = 1_700_000_000 * 10**9
NS = 10**9
NODE_DELAY_NS = 200_000_000
KEYFRAMES = 7
REJECT_TO = {101}
ROBOT, OTHER_ROBOT, SESSION = "robot1", "robot2", "s1"
# The camera on the base: 0.2 m forward, 0.5 m up, optical axes (z forward, x right, y down).
BASE_FROM_CAMERA = [0.2, 0.0, 0.5, -0.5, 0.5, -0.5, 0.5]


def exp_ros(d: Any) -> np.ndarray:
    """SE(3) exponential of a translation-first tangent vector (GTSAM, independent of vpr_ros)."""
    return gtsam.Pose3.Expmap(np.asarray(d, float)[[3, 4, 5, 0, 1, 2]]).matrix()


def log_ros(T: np.ndarray) -> np.ndarray:
    return gtsam.Pose3.Logmap(gtsam.Pose3(np.asarray(T, float)))[[3, 4, 5, 0, 1, 2]]


def xyzq_matrix(v: Any) -> np.ndarray:
    x, y, z, qx, qy, qz, qw = v
    return gtsam.Pose3(gtsam.Rot3.Quaternion(qw, qx, qy, qz), gtsam.Point3(x, y, z)).matrix()


def pose_at(stamp_ns: int) -> np.ndarray:
    """world_T_base of robot1 at a stamp: a 5 m circle at 0.05 rad/s with a little roll and pitch."""
    t = (stamp_ns - T0_NS) / NS
    a = 0.05 * t
    R = gtsam.Rot3.Ypr(a + np.pi / 2, 0.02 * np.sin(t), 0.03 * np.cos(t))
    return gtsam.Pose3(R, gtsam.Point3(5 * np.cos(a), 5 * np.sin(a), 0.1 * np.sin(0.3 * t))).matrix()


def kf_stamp(k: int) -> int:
    return T0_NS + 10 * NS * k


X_BASE_CAM = xyzq_matrix(BASE_FROM_CAMERA)
OTHER_POSE = exp_ros([3.0, -2.0, 0.1, 0.05, -0.02, 1.2])  # robot2's keyframe 7, in its own world
COVARIANCE_CAM = (lambda A: A @ A.T + np.diag([1e-4] * 3 + [1e-5] * 3))(
    np.random.default_rng(22).normal(size=(6, 6)) * np.array([0.03] * 3 + [0.008] * 3))

#: name -> (query (robot, id), match (robot, id), metric). L2's link is rejected by RTAB-Map,
#: L3's query has no RTAB-Map node, L4 is with robot2, L5 is monocular (scale unknown).
LOOPS = {"L1": ((ROBOT, 5), (ROBOT, 0), True), "L2": ((ROBOT, 3), (ROBOT, 1), True),
         "L3": ((ROBOT, 6), (ROBOT, 1), True), "L4": ((ROBOT, 2), (OTHER_ROBOT, 7), True),
         "L5": ((ROBOT, 4), (ROBOT, 0), False)}


def world_base(robot: str, k: int) -> np.ndarray:
    return pose_at(kf_stamp(k)) if robot == ROBOT else OTHER_POSE


def loop_stamp(robot: str, k: int) -> int:
    return kf_stamp(k) if robot == ROBOT else kf_stamp(0) + 3 * NS  # robot2's clock


def camera_loop(name: str) -> np.ndarray:
    """T_match_query of the cameras of loop ``name`` (what vpr_ros publishes today)."""
    (qr, qk), (mr, mk), _ = LOOPS[name]
    return np.linalg.inv(world_base(mr, mk) @ X_BASE_CAM) @ world_base(qr, qk) @ X_BASE_CAM


class Recorder(Node):
    """Records every message on the given topics: name -> list of messages."""

    def __init__(self, name: str, topics: dict[str, tuple[Any, str]], qos: Any) -> None:
        super().__init__(name)
        self.received: dict[str, list[Any]] = {key: [] for key in topics}
        for key, (msg_type, topic) in topics.items():
            self.create_subscription(msg_type, topic, self.received[key].append, qos)


class RtabmapStandIn(Node):
    """What the RTAB-Map bridge sees of RTAB-Map's ``rtabmap`` node (namespace ``rtabmap``)."""

    def __init__(self, qos: Any) -> None:
        super().__init__("rtabmap", namespace="rtabmap")
        from rtabmap_msgs import msg, srv  # built by the tests' setup; imported only where used

        self._msg = msg
        self.requests: list[Any] = []
        self.kept: list[Any] = []
        self.create_service(srv.AddLink, "add_link", self._add_link)
        self.map_data_pub = self.create_publisher(msg.MapData, "mapData", qos)
        self.graph_pub = self.create_publisher(msg.MapGraph, "mapGraph", qos)
        self.create_timer(0.2, self.publish_graph)

    def _add_link(self, request: Any, response: Any) -> Any:
        self.requests.append(request.link)
        if request.link.to_id not in REJECT_TO:
            self.kept.append(request.link)
        return response

    def graph(self) -> Any:
        ids = range(KEYFRAMES - 1)
        msg = self._msg.MapGraph(poses_id=[100 + k for k in ids],
                                 poses=[matrix_to_pose_msg(pose_at(kf_stamp(k) + NODE_DELAY_NS)) for k in ids])
        msg.header.frame_id = "map"
        # the kept user links, then RTAB-Map's neighbour links between consecutive nodes (newer -> older)
        msg.links = [*self.kept, *(self._msg.Link(from_id=101 + k, to_id=100 + k, type=0) for k in ids[:-1])]
        return msg

    def publish_map_data(self) -> None:
        msg = self._msg.MapData(graph=self.graph())
        msg.nodes = [self._msg.Node(id=100 + k, map_id=0, stamp=(kf_stamp(k) + NODE_DELAY_NS) / NS,
                                    pose=matrix_to_pose_msg(pose_at(kf_stamp(k) + NODE_DELAY_NS)))
                     for k in range(KEYFRAMES - 1)]
        self.map_data_pub.publish(msg)

    def publish_graph(self) -> None:
        self.graph_pub.publish(self.graph())
