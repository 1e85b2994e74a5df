"""DDS scenarios of pose_graph_node (test_pose_graph_node.py), run as a script inside a private network
namespace:

    python pose_graph_scenarios.py NAME --out result.json --tmp DIR --deadline SEC [--frames N]

``live_chain``: a real ``loop_closure_node`` (tiny extractor, odometry, a live map) and a real
``pose_graph_node`` in one namespace, as ``pose_graph.launch.py`` starts them; the harness publishes
images and odometry only. The loop-closure node announces its keyframes, the graph optimises them and
sends them back, and the loop-closure node stores them in its live map (read after both stopped).

``odometry_only``: a robot with only odometry. The harness publishes, for the SIMULATED two-lap corridor
(``pose_graph_inputs``), drifted nav_msgs/Odometry, a vpr_ros_msgs/Keyframe per keyframe (every fifth
without a pose: the node takes it from its own odometry) and the loops (lap 2 -> lap 1, plus 10 % wrong
ones) to a real ``pose_graph_node`` process started with what ``pose_graph.launch.py`` would pass; it
records /tf, ``optimized_path``, ``keyframe_poses`` and ``diagnostics``. Before the node starts it also
publishes a loaded map's keyframes on the latched ``map_keyframes`` (MAP_KEYFRAMES, no loops into them):
the node must receive them late, hold them apart from the robot, and change nothing of the robot's output.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import Odometry, Path as PathMsg
from tf2_msgs.msg import TFMessage
from vpr_ros_msgs.msg import Keyframe as KeyframeMsg, KeyframePoses, LoopClosure as LoopClosureMsg

from vpr_ros.cli.simulated import simulated_trajectory
from vpr_ros.core.types import Keyframe, LoopClosure
from vpr_ros.launch_args import to_ros_args
from vpr_ros.launch_pose_graph import pose_graph_launch_configs
from vpr_ros.nodes.conversions import loop_closure_to_msg, ns_to_stamp
from vpr_ros.nodes.keyframe_announce import MAP_KEYFRAME_QOS
from vpr_ros.nodes.conversions import matrix_to_pose_msg
from vpr_ros.nodes.pose_graph_msgs import keyframe_to_msg, map_keyframe_msg
from vpr_ros.nodes.tf_frames import transform_to_matrix

from revisit_data import corridor_revisit
from scenario_harness import RELIABLE, TEST_PARAMS as NODE_TEST_PARAMS, Harness, NodeProcess, run_scenario_main, \
    scenario_parser

START_NS, PERIOD_NS = 1_000_000_000, 100_000_000
ROBOT, SESSION, ODOM_FRAME = "r1", "s1", "sim_odom"
MAP_KEYFRAMES = 5  # of robot "m0" (a lower id than ROBOT: the map is no robot), one per metre in the map frame
TEST_PARAMS = ["-p", "pose_graph.publish_period_sec:=0.2", "-p", "pose_graph.poses_period_sec:=0.2",
               "-p", "pose_graph.tf_period_sec:=0.1"]


def pose_graph_inputs(n: int) -> tuple[Any, list[Keyframe], list[LoopClosure], list[int]]:
    """SIMULATED run (n keyframes per lap along 110 m), its keyframes, loops (true then 10 % wrong) and
    the number of wrong ones."""
    run = simulated_trajectory(n, n, seed=0, spacing_m=110.0 / (n - 1))  # a Corridor-long walk (its drift)
    g = np.ones(4, np.float32) / 2
    kfs = [Keyframe(i, START_NS + i * PERIOD_NS, ROBOT, SESSION, g, pose=p) for i, p in enumerate(run.odometry)]

    def loop(q: int, m: int) -> LoopClosure:
        return LoopClosure(q, kfs[q].stamp_ns, ROBOT, SESSION, m, kfs[m].stamp_ns, ROBOT, SESSION, 0.9, 0, "mnn",
                           150, 400, 0, 150.0, 2, "test", 4)

    rng = np.random.default_rng(5)
    wrong: list[int] = []
    while len(wrong) < max(1, n // 10):
        q, m = int(rng.integers(0, n)), int(rng.integers(0, n))
        if abs(q - m) >= 10:
            wrong.append((n + q, m))
    loops = [loop(n + i, i) for i in range(n)] + [loop(q, m) for q, m in wrong]
    return run, kfs, loops, len(wrong)


def _odometry(kf: Keyframe) -> Odometry:
    msg = Odometry()
    msg.header.stamp, msg.header.frame_id, msg.child_frame_id = ns_to_stamp(kf.stamp_ns), ODOM_FRAME, "base_link"
    msg.pose.pose = matrix_to_pose_msg(kf.pose)
    return msg


class NodeProc:
    """A pose_graph_node process with its log in a file."""

    def __init__(self, argv: list[str], log: Path) -> None:
        self.log, self._file = log, log.open("w")
        self.proc = subprocess.Popen([sys.executable, "-m", "vpr_ros.nodes.pose_graph_node", *argv],
                                     stdout=self._file, stderr=subprocess.STDOUT)

    def stop(self) -> int:
        self.proc.send_signal(2)
        try:
            rc = self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait(5)
        self._file.close()
        return rc

    def tail(self) -> str:
        return self.log.read_text()[-3000:]


def odometry_only(h: Harness, a: argparse.Namespace) -> dict[str, Any]:
    (graph,) = pose_graph_launch_configs({"loop_closure": "false", "namespace": ROBOT, "robot_id": ROBOT,
                                          "odom_topic": "odom"})
    map_pub = h.create_publisher(KeyframeMsg, f"/{ROBOT}/map_keyframes", MAP_KEYFRAME_QOS)
    for i in range(MAP_KEYFRAMES):  # before the node subscribes: it gets them from the latched history
        T = np.eye(4)
        T[0, 3] = float(i)
        map_pub.publish(map_keyframe_msg(("m0", "old", i), START_NS + i, T, np.diag([1e-4] * 3 + [1e-5] * 3), "map"))
    node = NodeProc([*to_ros_args(graph.config), *TEST_PARAMS], Path(a.tmp) / "pose_graph_node.log")
    rec: dict[str, Any] = {"tf": {}, "path": None, "poses": None}
    ns = f"/{ROBOT}"
    h.create_subscription(TFMessage, "/tf", lambda m: rec["tf"].update(
        {(t.header.frame_id, t.child_frame_id): transform_to_matrix(t.transform).tolist() for t in m.transforms}), 100)
    h.create_subscription(PathMsg, f"{ns}/optimized_path", lambda m: rec.update(path=m), 2)
    h.create_subscription(KeyframePoses, f"{ns}/keyframe_poses", lambda m: rec.update(poses=m), RELIABLE)
    h.create_subscription(DiagnosticArray, f"{ns}/diagnostics", lambda m: h.diagnostics.update(
        {ROBOT: {kv.key: kv.value for kv in m.status[0].values}}), 10)
    odom = h.create_publisher(Odometry, f"{ns}/odom", RELIABLE)
    keyframes = h.create_publisher(KeyframeMsg, f"{ns}/keyframes", RELIABLE)
    loops = h.create_publisher(LoopClosureMsg, f"{ns}/loop_closures", RELIABLE)
    _, kfs, loop_list, _ = pose_graph_inputs(a.frames)
    by_query: dict[int, list[LoopClosure]] = {}
    for lc in loop_list:
        by_query.setdefault(lc.query_id, []).append(lc)
    out: dict[str, Any] = {}
    try:
        ready = h.spin_until(lambda: node.proc.poll() is None and ROBOT in h.diagnostics and all(
            p.get_subscription_count() >= 1 for p in (odom, keyframes, loops)), 30.0)
        if not ready:
            raise RuntimeError("pose_graph_node not ready:\n" + node.tail())
        t0 = time.monotonic()
        for i, kf in enumerate(kfs):
            odom.publish(_odometry(kf))
            h.spin_for(0.005)  # the node's odometry first, as a driver publishes it
            msg = keyframe_to_msg(kf, ODOM_FRAME)
            if i % 5 == 4:
                msg.has_pose, msg.header.frame_id = False, ""  # the node's own odometry gives its pose
            keyframes.publish(msg)
            for lc in by_query.get(i, []):
                loops.publish(loop_closure_to_msg(lc, "base_link"))
            h.spin_for(0.005)
        total = len(kfs)

        def done() -> bool:
            d = h.diagnostics.get(ROBOT, {})
            return (d.get("keyframes") == str(total + MAP_KEYFRAMES) and d.get("loop_factors") == str(len(loop_list))
                    and rec["path"] is not None and len(rec["path"].poses) == total
                    and rec["poses"] is not None and len(rec["poses"].keyframe_ids) == total
                    and ("map", ODOM_FRAME) in rec["tf"])

        out["settled"] = h.spin_until(done, 20.0)
        h.spin_for(0.3)  # one more publish period: the outputs of the final estimate
        out["publish_sec"] = time.monotonic() - t0
        out["diag"] = dict(h.diagnostics.get(ROBOT, {}))
        out["tf"] = {f"{p}->{c}": T for (p, c), T in rec["tf"].items()}
        if rec["path"] is not None:
            out["path_frame"] = rec["path"].header.frame_id
            out["path"] = [[p.pose.position.x, p.pose.position.y, p.pose.position.z] for p in rec["path"].poses]
        if rec["poses"] is not None:
            m = rec["poses"]
            out["poses"] = {"frame": m.header.frame_id, "anchor": [m.anchor_robot_id, m.anchor_session_id],
                            "ids": list(map(int, m.keyframe_ids)), "covariances": len(m.covariances),
                            "xyz": [[p.position.x, p.position.y, p.position.z] for p in m.poses]}
    finally:
        out["rc"] = node.stop()
        out["log"] = node.tail()
    return out


def live_chain(h: Harness, a: argparse.Namespace) -> dict[str, Any]:
    from sensor_msgs.msg import Image

    from vpr_ros.core.map.map_poses import read_optimized_poses
    from vpr_ros.nodes.conversions import rgb_to_image_msg

    map_dir = Path(a.tmp) / "map"
    lc, graph = pose_graph_launch_configs({"namespace": "lc", "odom_topic": "odom", "map_save": str(map_dir),
                                           "image_topic": "image"})
    loop_node = NodeProcess([*to_ros_args(lc.config), *NODE_TEST_PARAMS, "-p", "queue.size:=100",
                             "-p", "keyframes.min_translation_m:=0.0", "-p", "keyframes.min_rotation_deg:=0.0",
                             # each image's odometry is published first; under a loaded CI machine its
                             # callback can still run after the image's: give it time (default 0.1 s)
                             "-p", "odom.wait_sec:=2.0"],
                            Path(a.tmp) / "loop_closure_node.log")
    graph_node = NodeProc([*to_ros_args(graph.config), *TEST_PARAMS], Path(a.tmp) / "pose_graph_node.log")
    announced: list[KeyframeMsg] = []
    h.create_subscription(KeyframeMsg, "/lc/keyframes", announced.append, RELIABLE)
    h.watch("lc")
    images = h.create_publisher(Image, "/lc/image", RELIABLE)
    odom = h.create_publisher(Odometry, "/lc/odom", RELIABLE)
    out: dict[str, Any] = {}
    try:
        ready = h.spin_until(lambda: images.get_subscription_count() >= 1 and odom.get_subscription_count() >= 2
                             and "lc" in h.diagnostics, 40.0)
        if not ready:
            raise RuntimeError("nodes not ready:\n" + loop_node.tail() + graph_node.tail())
        frames = corridor_revisit(a.frames)[:a.frames]
        # odometry flowing before the first image: the node waits for an image's own odometry only while
        # odometry flows (nodes/odom_buffer.py), so without this prior pose keyframe 0 could be processed
        # before its odometry arrived (announced without a pose, seen once in a CI run)
        prior = Keyframe(-1, START_NS - 100_000_000, "", "", np.zeros(1, np.float32), pose=np.eye(4))
        odom.publish(_odometry(prior))
        h.spin_for(1.0)
        for i, (_, rgb) in enumerate(frames):
            stamp = START_NS + i * 250_000_000
            kf = Keyframe(i, stamp, "", "", np.zeros(1, np.float32), pose=np.eye(4))
            kf.pose[0, 3] = float(i)
            odom.publish(_odometry(kf))  # the odometry of the image's instant first: no waiting
            h.spin_for(0.02)
            images.publish(rgb_to_image_msg(rgb, stamp, "camera"))
            h.spin_for(0.2)
        out["settled"] = h.spin_until(lambda: len(announced) >= a.frames, 20.0)
        h.spin_for(1.5)  # a few keyframe_poses periods: the graph's poses reach the loop-closure node
        out["announced"] = [[m.robot_id, m.session_id, int(m.keyframe_id), m.has_pose, m.header.frame_id,
                             m.pose.position.x] for m in announced]
    finally:
        out["rc"] = {"loop_closure_node": loop_node.stop(), "pose_graph_node": graph_node.stop()}
        out["log"] = loop_node.tail()[-1500:] + graph_node.tail()[-1500:]
    stored = read_optimized_poses(map_dir)
    out["stored"] = {str(k[2]): v.T_map_base[:3, 3].tolist() for k, v in stored.items()}
    return out


SCENARIOS = {f.__name__: f for f in (odometry_only, live_chain)}


def main() -> int:
    return run_scenario_main(SCENARIOS, scenario_parser(SCENARIOS, frames=40).parse_args())


if __name__ == "__main__":
    sys.exit(main())
