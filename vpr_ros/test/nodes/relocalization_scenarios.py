"""DDS scenarios of the relocalisation node tests (test_relocalization_node.py), run as a script in a
private network namespace, like scenarios.py.

``kidnapped``: a map of the SIMULATED room is saved, then two real loop_closure_node processes load it:

* ``/a``: on_demand mode, ``relocalization.publish_tf``, the camera on the robot from
  ``frames.base_from_camera`` (no tf2_ros here);
* ``/b``: started with exactly what ``relocalization.launch.py target:=nav2 mode:=once`` passes, so its
  pose goes to ``/b/initialpose``.

Both get the same kidnapped frames (image, aligned depth, camera_info, odometry) in three rounds:
before any request, after ``/a/loop_closure_node/relocalize``, and after a message on
``/a/relocalize_trigger``. The script records every pose, /tf message and the last diagnostics.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from geometry_msgs.msg import PoseWithCovarianceStamped
from nav_msgs.msg import Odometry
from sensor_msgs.msg import CameraInfo, Image
from std_srvs.srv import Trigger
from tf2_msgs.msg import TFMessage

from vpr_ros.launch_args import to_ros_args
from vpr_ros.launch_relocalization import relocalization_launch_config
from vpr_ros.nodes.conversions import rgb_to_image_msg, stamp_to_ns

import relocalization_data as data
from scenario_harness import (Harness, NodeProcess, RELIABLE, TEST_PARAMS, run_scenario_main, scenario_parser,
                              wait_ready, wait_settled)

CAMERA_FRAME = "camera_optical"


def _pose(m: PoseWithCovarianceStamped) -> dict[str, Any]:
    p, q = m.pose.pose.position, m.pose.pose.orientation
    return {"stamp_ns": stamp_to_ns(m.header.stamp), "frame_id": m.header.frame_id,
            "position": [p.x, p.y, p.z], "quaternion": [q.x, q.y, q.z, q.w], "covariance": list(m.pose.covariance)}


def _tf(m: TFMessage) -> list[dict[str, Any]]:
    out = []
    for t in m.transforms:
        r, q = t.transform.translation, t.transform.rotation
        out.append({"stamp_ns": stamp_to_ns(t.header.stamp), "parent": t.header.frame_id, "child": t.child_frame_id,
                    "translation": [r.x, r.y, r.z], "quaternion": [q.x, q.y, q.z, q.w]})
    return out


def kidnapped(h: Harness, a: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(a.tmp)
    t0 = time.monotonic()
    out: dict[str, Any] = {"map_keyframes": data.save_map(tmp / "map", data.map_views())}
    common = [*TEST_PARAMS, *(x for k, v in data.PARAMS.items() for x in ("-p", f"{k}:={v}")),
              "-p", f"frames.base_from_camera:='{data.base_from_camera_param()}'"]
    node_a = NodeProcess(["--ros-args", "-r", "__ns:=/a", *common, "-p", f"map.load_path:={tmp / 'map'}",
                          "-p", "camera_info.enabled:=true", "-p", "depth.enabled:=true",
                          "-p", "relocalization.publish_tf:=true", "-p", "tf.republish_sec:=0.0"], tmp / "node_a.log")
    launch = relocalization_launch_config({"target": "nav2", "mode": "once", "map_load": str(tmp / "map"),
                                           "namespace": "b", "camera_info_topic": "camera_info",
                                           "depth_topic": "depth"})
    node_b = NodeProcess([*to_ros_args(launch), *common], tmp / "node_b.log")
    out["launch_b"] = {"remappings": [list(r) for r in launch.remappings], "overrides": launch.overrides}
    queries = data.query_views()  # rendered while the nodes start
    out["render_and_map_sec"] = time.monotonic() - t0
    got: dict[str, list[dict[str, Any]]] = {"a": [], "b": [], "tf": []}
    h.create_subscription(PoseWithCovarianceStamped, "/a/global_pose", lambda m: got["a"].append(_pose(m)), RELIABLE)
    h.create_subscription(PoseWithCovarianceStamped, "/b/initialpose", lambda m: got["b"].append(_pose(m)), RELIABLE)
    h.create_subscription(TFMessage, "/tf", lambda m: got["tf"].extend(_tf(m)), RELIABLE)
    pubs = {ns: {"image": h.create_publisher(Image, f"/{ns}/image", RELIABLE),
                 "depth": h.create_publisher(Image, f"/{ns}/depth", RELIABLE),
                 "info": h.create_publisher(CameraInfo, f"/{ns}/camera_info", RELIABLE),
                 "odom": h.create_publisher(Odometry, f"/{ns}/odom", RELIABLE)} for ns in ("a", "b")}
    trigger = h.create_publisher(PoseWithCovarianceStamped, "/a/relocalize_trigger", RELIABLE)
    for ns, node in (("a", node_a), ("b", node_b)):
        h.watch(ns)
        wait_ready(h, pubs[ns]["image"], ns, node, 30.0)
    out["ready_sec"] = time.monotonic() - t0
    h.spin_until(lambda: all(p.get_subscription_count() >= 1 for ns in pubs for p in pubs[ns].values())
                 and trigger.get_subscription_count() >= 1, 10.0)
    # The kidnapped odometry's frame, unknown to the map: neither identity nor any frame's T_map_base.
    T_map_odom = data.T_MAP_ODOM
    frames: list[dict[str, Any]] = []

    def play(round_: int) -> list[int]:
        for i, view in enumerate(queries):
            stamp = (200 + 10 * round_ + i) * 10**9
            T_odom_base = np.linalg.solve(T_map_odom, view.T_map_base)
            frames.append({"stamp_ns": stamp, "T_map_base": view.T_map_base.tolist(),
                           "T_odom_base": T_odom_base.tolist()})
            n = len(frames)
            # Odometry and depth first, and received, then the image: under load a lost UDP fragment of a
            # reliable message is repaired only at the next heartbeat, after the image was processed.
            for p in pubs.values():
                p["odom"].publish(data.odometry(T_odom_base, stamp))
                p["depth"].publish(data.depth_image(view.depth, stamp, CAMERA_FRAME))
            h.spin_until(lambda: all(h.diag(ns, "odometry_received", 0) >= n and h.diag(ns, "depth_received", 0) >= n
                                     for ns in pubs), 10.0)
            for p in pubs.values():
                p["image"].publish(rgb_to_image_msg(view.image, stamp, CAMERA_FRAME))
        out.setdefault("settled", []).append([wait_settled(h, ns, len(frames), 20.0) for ns in pubs])
        h.spin_for(0.3)  # a fix is published before frames_processed counts its frame
        out.setdefault("round_sec", []).append(time.monotonic() - t0)
        return [len(got["a"]), len(got["b"])]

    # A driver streams CameraInfo; the node keeps the last one. Sent until both nodes hold it.
    for _ in range(50):
        for p in pubs.values():
            p["info"].publish(data.camera_info(0, CAMERA_FRAME))
        if h.spin_until(lambda: all(h.diag(ns, "camera_info_received", 0) >= 1 for ns in pubs), 0.3):
            break
    out["counts_before_request"] = play(0)
    response = h.call(Trigger, "/a/loop_closure_node/relocalize", Trigger.Request())
    out["relocalize"] = [response.success, response.message]
    out["counts_after_request"] = play(1)
    trigger.publish(PoseWithCovarianceStamped())  # what cuVSLAM's trigger_hint sends: an empty pose
    h.spin_until(lambda: h.diag("a", "relocalization.triggers", 0) >= 1, 5.0)
    out["counts_after_trigger"] = play(2)
    out.update(frames=frames, poses=got, diag={ns: dict(h.diagnostics.get(ns, {})) for ns in ("a", "b")})
    out["alive"] = [node_a.alive(), node_b.alive()]
    out["rc"] = [node_a.stop(), node_b.stop()]
    out["log"] = node_a.tail()[-2000:] + node_b.tail()[-1500:]
    return out


SCENARIOS = {f.__name__: f for f in (kidnapped,)}


def main() -> int:
    return run_scenario_main(SCENARIOS, scenario_parser(SCENARIOS, frames=3).parse_args())


if __name__ == "__main__":
    sys.exit(main())
