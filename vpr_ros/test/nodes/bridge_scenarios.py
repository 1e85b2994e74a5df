"""DDS scenario of the bridge tests, run as a script inside a private network namespace.

    python bridge_scenarios.py bridges --out result.json --tmp DIR --deadline SEC

All five bridges (RTAB-Map, Swarm-SLAM, Hydra in both key modes, LIO-SAM), started with exactly what
their launch files pass (launch_bridges), run in one process and one rclpy context with the
stand-in peers of bridge_standins.py; a feeder publishes real vpr_ros_msgs/Keyframe, LoopClosure and
nav_msgs/Odometry. The script writes what every peer received (and the bridges' diagnostics) as JSON
for test_bridges.py to assert on.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, Callable

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import Odometry
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from std_msgs.msg import Float64MultiArray
from vpr_ros_msgs.msg import Keyframe, LoopClosure

import bridge_standins as w
from scenario_harness import RELIABLE, scenario_parser
from vpr_ros.io.poses import matrix_to_pose
from vpr_ros.launch_bridges import bridge_launch_config, bridge_ros_args
from vpr_ros.nodes.conversions import matrix_to_pose_msg
from vpr_ros.nodes.conversions import ns_to_stamp

BRIDGE_ARGS = {
    "rtabmap": ("rtabmap", {"base_from_body": " ".join(map(str, w.BASE_FROM_CAMERA))}, ["rtabmap.wait_node_sec:=1.0"]),
    "cslam": ("cslam", {"base_from_body": ",".join(map(str, w.BASE_FROM_CAMERA)), "namespace": "r0",
                        "loop_closures_topic": "/loop_closures", "keyframes_topic": "/keyframes",
                        "odom_topic": "/odom", "robot_names": "robot1,robot2"}, []),
    "hydra": ("hydra", {"base_from_body": " ".join(map(str, w.BASE_FROM_CAMERA)),
                        "output_topic": "/hydra/external_loop_closures"}, []),
    "hydra_index": ("hydra", {"base_from_body": " ".join(map(str, w.BASE_FROM_CAMERA)), "key_mode": "index",
                               "robot_names": "robot1,robot2", "output_topic": "/kimera/external_loop_closures"},
                     ["hydra.covariance_order:=rotation_first"]),
    "lio_sam": ("lio_sam", {}, ["lio_sam.min_period_sec:=0.1"]),
}


def _xyzq(T: np.ndarray) -> list[float]:
    (x, y, z), q = matrix_to_pose(T)
    return [x, y, z, *q]


def _tf(t: Any) -> list[float]:
    return [t.translation.x, t.translation.y, t.translation.z, t.rotation.x, t.rotation.y, t.rotation.z,
            t.rotation.w]


def _pose(p: Any) -> list[float]:
    return [p.position.x, p.position.y, p.position.z, p.orientation.x, p.orientation.y, p.orientation.z,
            p.orientation.w]


def keyframe_msgs() -> list[Keyframe]:
    out = []
    for k in range(w.KEYFRAMES):
        msg = Keyframe(robot_id=w.ROBOT, session_id=w.SESSION, keyframe_id=k, has_pose=k != 5)
        msg.header.stamp, msg.header.frame_id = ns_to_stamp(w.kf_stamp(k)), "odom"
        if msg.has_pose:
            msg.pose = matrix_to_pose_msg(w.pose_at(w.kf_stamp(k)))
        out.append(msg)
    return out


def loop_msgs() -> list[LoopClosure]:
    out = []
    for name, ((qr, qk), (mr, mk), metric) in w.LOOPS.items():
        msg = LoopClosure(query_keyframe_id=qk, query_robot_id=qr, query_session_id=w.SESSION,
                          match_keyframe_id=mk, match_robot_id=mr, match_session_id=w.SESSION if mr == w.ROBOT else "x",
                          relative_pose_valid=True, translation_scale_known=metric,
                          geometry_method="pnp" if metric else "essential")
        msg.query_stamp, msg.match_stamp = ns_to_stamp(w.loop_stamp(qr, qk)), ns_to_stamp(w.loop_stamp(mr, mk))
        msg.header.stamp, msg.header.frame_id = msg.query_stamp, "map"
        msg.relative_pose.pose = matrix_to_pose_msg(w.camera_loop(name))
        msg.relative_pose.covariance = [float(v) for v in w.COVARIANCE_CAM.reshape(36)]
        out.append(msg)
    return out


def bridges(a: Any) -> dict[str, Any]:
    nodes: list[Node] = []
    for key, (backend, args, extra) in BRIDGE_ARGS.items():
        module = {"rtabmap": "rtabmap_bridge", "cslam": "cslam_bridge", "hydra": "hydra_bridge",
                  "lio_sam": "lio_sam_bridge"}[backend]
        cls = {"rtabmap": "RtabmapBridge", "cslam": "CslamBridge", "hydra": "HydraBridge",
               "lio_sam": "LioSamBridge"}[backend]
        argv = [f"__node:={key}_bridge" if a.startswith("__node:=") else a
                for a in bridge_ros_args(bridge_launch_config(backend, args))]
        argv += [x for e in extra for x in ("-p", e)] + ["-p", "diagnostics.period_sec:=0.2"]
        node_cls = getattr(__import__(f"vpr_ros.nodes.bridges.{module}", fromlist=[cls]), cls)
        nodes.append(node_cls(cli_args=argv))
    from cslam_common_interfaces.msg import InterRobotLoopClosure, IntraRobotLoopClosure, KeyframeOdom
    from pose_graph_tools_msgs.msg import PoseGraph

    rtabmap = w.RtabmapStandIn(RELIABLE)
    peers = w.Recorder("peers", {
        "keyframe_odom": (KeyframeOdom, "/r0/cslam/keyframe_odom"),
        "intra": (IntraRobotLoopClosure, "/r0/cslam/intra_robot_loop_closure"),
        "inter": (InterRobotLoopClosure, "/cslam/inter_robot_loop_closure"),
        "hydra": (PoseGraph, "/hydra/external_loop_closures"),
        "hydra_index": (PoseGraph, "/kimera/external_loop_closures"),
        "lio_sam": (Float64MultiArray, "/lio_loop/loop_closure_detection")}, RELIABLE)
    diagnostics: dict[str, dict[str, str]] = {}
    feeder = Node("feeder")
    for topic in ("/diagnostics", "/r0/diagnostics"):
        feeder.create_subscription(DiagnosticArray, topic, lambda m: diagnostics.update(
            {s.name.split(":")[0]: {kv.key: kv.value for kv in s.values} for s in m.status}), 50)
    kf_pub = feeder.create_publisher(Keyframe, "/keyframes", RELIABLE)
    loop_pub = feeder.create_publisher(LoopClosure, "/loop_closures", RELIABLE)
    odom_pub = feeder.create_publisher(Odometry, "/odom", RELIABLE)
    executor = SingleThreadedExecutor()
    for n in (*nodes, rtabmap, peers, feeder):
        executor.add_node(n)

    def spin_until(pred: Callable[[], bool], timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end and not pred():
            executor.spin_once(timeout_sec=0.05)
        return pred()

    start = time.monotonic()
    ready = spin_until(lambda: loop_pub.get_subscription_count() >= 5 and kf_pub.get_subscription_count() >= 5
                       and odom_pub.get_subscription_count() >= 5 and rtabmap.map_data_pub.get_subscription_count() >= 1
                       and len(diagnostics) >= 5, 20.0)
    discovery_sec = time.monotonic() - start
    rtabmap.publish_map_data()
    for dt in (-100_000_000, 0, 100_000_000):  # odometry around keyframe 5, which has no pose
        odom = Odometry()
        odom.header.stamp, odom.header.frame_id = ns_to_stamp(w.kf_stamp(5) + dt), "odom"
        odom.pose.pose = matrix_to_pose_msg(w.pose_at(w.kf_stamp(5) + dt))
        odom_pub.publish(odom)
    spin_until(lambda: False, 0.3)
    for msg in keyframe_msgs():
        kf_pub.publish(msg)
    spin_until(lambda: len(peers.received["keyframe_odom"]) >= w.KEYFRAMES, 5.0)
    for msg in loop_msgs():
        loop_pub.publish(msg)
    done = spin_until(lambda: len(rtabmap.requests) >= 2 and len(peers.received["lio_sam"]) >= 3
                      and int(diagnostics.get("rtabmap_bridge", {}).get("links_rejected", 0)) >= 1
                      and int(diagnostics.get("rtabmap_bridge", {}).get("unmatched", 0)) >= 1
                      and len(peers.received["hydra_index"]) >= 4, 15.0)
    spin_until(lambda: False, 0.6)  # the last diagnostics and anything extra that would still arrive
    r = peers.received
    result = {
        "ready": ready, "done": done, "discovery_sec": discovery_sec,
        "links": [{"from": l.from_id, "to": l.to_id, "type": l.type, "transform": _tf(l.transform),
                   "information": list(l.information)} for l in rtabmap.requests],
        "keyframe_odom": [{"id": m.id, "stamp_ns": m.odom.header.stamp.sec * w.NS + m.odom.header.stamp.nanosec,
                           "frame_id": m.odom.header.frame_id, "pose": _pose(m.odom.pose.pose)}
                          for m in r["keyframe_odom"]],
        "intra": [{"kf0": m.keyframe0_id, "kf1": m.keyframe1_id, "success": m.success,
                   "transform": _tf(m.transform)} for m in r["intra"]],
        "inter": [{"robot0": m.robot0_id, "kf0": m.robot0_keyframe_id, "robot1": m.robot1_id,
                   "kf1": m.robot1_keyframe_id, "success": m.success, "transform": _tf(m.transform)}
                  for m in r["inter"]],
        "lio_sam": [list(m.data) for m in r["lio_sam"]],
        "diagnostics": diagnostics,
    }
    for key in ("hydra", "hydra_index"):
        result[key] = [{"nodes": len(m.nodes), "edges": [
            {"key_from": e.key_from, "key_to": e.key_to, "robot_from": e.robot_from, "robot_to": e.robot_to,
             "type": e.type, "pose": _pose(e.pose), "covariance": list(e.covariance),
             "stamp_ns": e.header.stamp.sec * w.NS + e.header.stamp.nanosec} for e in m.edges]} for m in r[key]]
    for n in (*nodes, rtabmap, peers, feeder):
        n.destroy_node()
    return result


def main() -> int:
    a = scenario_parser({"bridges": bridges}, 0).parse_args()
    rclpy.init()
    try:
        result = bridges(a)
    finally:
        rclpy.try_shutdown()
    with open(a.out, "w") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
