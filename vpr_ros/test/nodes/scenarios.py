"""DDS scenarios of the node tests, each run as a script inside a private network namespace.

    python scenarios.py NAME --out result.json --tmp DIR --deadline SEC [options]

conftest.run_scenario starts this script with unshare; it starts the real ``loop_closure_node``
process(es), drives them with a harness node (real rclpy, real vpr_ros_msgs), and writes what it
observed as JSON for the pytest side to assert on. Every wait is bounded by time.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import Odometry
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_srvs.srv import Trigger
from vpr_ros_msgs.msg import LoopClosure

from vpr_ros.core.config import config_to_flat
from vpr_ros.launch_args import node_launch_config, to_ros_args
from vpr_ros.nodes.conversions import ns_to_stamp, rgb_to_image_msg

from revisit_data import corridor_revisit
from map_scenarios import append_kill, autosave, map_faults, map_services
from scenario_harness import (Harness, NodeProcess, RELIABLE, TEST_PARAMS, accounted, huge_png,
                              loop_dict, publish_paced, run_scenario_main, scenario_parser,
                              wait_ready, wait_settled)


# -- scenarios ---------------------------------------------------------------------------------
def revisit(h: Harness, a: argparse.Namespace) -> dict[str, Any]:
    """Launch-args node; play a corridor revisit; SIGINT; the map is saved at shutdown."""
    cfg = node_launch_config(json.loads(a.launch_args))
    node = NodeProcess(to_ros_args(cfg), Path(a.tmp) / "node_revisit.log")
    image_topic = dict(cfg.remappings)["image"]
    pub = h.create_publisher(Image, image_topic, RELIABLE)
    h.watch(cfg.namespace)
    wait_ready(h, pub, cfg.namespace, node, 20.0)
    msgs = [rgb_to_image_msg(img, stamp, "camera") for stamp, img in corridor_revisit(a.frames)]
    publish_paced(h, pub, msgs, a.rate)
    settled = wait_settled(h, cfg.namespace, len(msgs), 20.0)
    h.spin_for(0.3)  # loop closures are published before frames_processed counts the frame
    diag = dict(h.diagnostics[cfg.namespace])
    rc = node.stop()
    return {"loops": [loop_dict(m) for m in h.loops], "diag": diag, "settled": settled, "rc": rc,
            "log": node.tail()}


def bad_inputs(h: Harness, a: argparse.Namespace) -> dict[str, Any]:
    """Raw and compressed nodes fed broken input between good frames."""
    raw = NodeProcess(["--ros-args", "-r", "__ns:=/raw", *TEST_PARAMS], Path(a.tmp) / "node_raw.log")
    jpg = NodeProcess(["--ros-args", "-r", "__ns:=/jpg", "-p", "image.compressed:=true", *TEST_PARAMS],
                      Path(a.tmp) / "node_jpg.log")
    raw_pub = h.create_publisher(Image, "/raw/image", RELIABLE)
    jpg_pub = h.create_publisher(CompressedImage, "/jpg/image", RELIABLE)
    odom_pub = h.create_publisher(Odometry, "/raw/odom", RELIABLE)
    h.watch("raw")
    h.watch("jpg")
    wait_ready(h, raw_pub, "raw", raw, 20.0)
    wait_ready(h, jpg_pub, "jpg", jpg, 20.0)
    h.spin_until(lambda: odom_pub.get_subscription_count() >= 1, 5.0)
    (_, img0), (_, img1) = corridor_revisit(2)[:2]
    sec = 10**9

    def raw_msg(stamp: int, img: np.ndarray = img0, **fields: Any) -> Image:
        msg = rgb_to_image_msg(img, stamp)
        for k, v in fields.items():
            setattr(msg, k, v)
        return msg

    black16 = raw_msg(16 * sec, np.zeros((48, 64, 3), np.uint8))
    black16.encoding, black16.step, black16.data = "mono16", 128, b"\x00" * (128 * 48)
    raw_msgs = [raw_msg(10 * sec), raw_msg(11 * sec, encoding="weird16"),
                raw_msg(12 * sec, height=0, width=0, step=0, data=b""), raw_msg(13 * sec, data=b"\x00" * 10),
                raw_msg(5 * sec, img1), raw_msg(14 * sec, img1),
                raw_msg(15 * sec, np.full((1, 1, 3), 128, np.uint8)),  # 1x1: the model output is all-zero
                black16,                                               # all-black mono16: the same
                raw_msg(17 * sec, height=20000, width=20000, step=60000, data=b"\x00" * 100),  # too large
                raw_msg(18 * sec, img0)]
    nan_odom = Odometry()
    nan_odom.header.stamp = ns_to_stamp(14 * sec)
    nan_odom.pose.pose.position.x = math.nan
    odom_pub.publish(nan_odom)
    jpeg = cv2.imencode(".jpg", cv2.cvtColor(img0, cv2.COLOR_RGB2BGR))[1].tobytes()

    def jpg_msg(stamp: int, data: bytes = jpeg, fmt: str = "jpeg") -> CompressedImage:
        msg = CompressedImage(format=fmt, data=data)
        msg.header.stamp = ns_to_stamp(stamp)
        return msg

    jpg_msgs = [jpg_msg(10 * sec), jpg_msg(11 * sec, jpeg[:20] + b"garbage" * 50),
                jpg_msg(12 * sec, b""), jpg_msg(13 * sec, jpeg, "theora"), jpg_msg(14 * sec),
                jpg_msg(15 * sec, huge_png(20000), "png"),  # 1.2 GB decoded: refused from its header
                jpg_msg(16 * sec)]
    for r, j in itertools.zip_longest(raw_msgs, jpg_msgs):
        if r is not None:
            raw_pub.publish(r)
        if j is not None:
            jpg_pub.publish(j)
        h.spin_for(0.05)
    wait_settled(h, "raw", len(raw_msgs), 15.0)
    wait_settled(h, "jpg", len(jpg_msgs), 15.0)
    h.spin_until(lambda: h.diag("raw", "bad_input.nan_odometry") >= 1, 5.0)
    h.spin_for(0.3)
    out = {"raw": dict(h.diagnostics["raw"]), "jpg": dict(h.diagnostics["jpg"]),
           "alive": [raw.alive(), jpg.alive()], "accounted": [accounted(h, "raw"), accounted(h, "jpg")]}
    out["rc"] = [raw.stop(), jpg.stop()]
    out["log"] = raw.tail()[-1500:] + jpg.tail()[-1500:]
    return out


def back_pressure(h: Harness, a: argparse.Namespace) -> dict[str, Any]:
    """30 Hz into a model taking 0.2 s per frame with queue.size 3."""
    node = NodeProcess(["--ros-args", *TEST_PARAMS, "-p", "extractor_factory:=tiny_extractor:build_slow",
                        "-p", "queue.size:=3", "-p", "diagnostics.period_sec:=0.05"],
                       Path(a.tmp) / "node_bp.log")
    pub = h.create_publisher(Image, "image", RELIABLE)
    h.watch("")
    wait_ready(h, pub, "", node, 20.0)
    frames = corridor_revisit(a.frames // 2)  # a.frames in all (ref + query)
    msgs = [rgb_to_image_msg(img, i * 10**8) for i, (_, img) in enumerate(frames)]
    depths: list[float] = []
    h.create_subscription(DiagnosticArray, "/diagnostics",
                          lambda m: depths.append(float(next(kv.value for kv in m.status[0].values
                                                             if kv.key == "queue_depth"))), 10)
    took = publish_paced(h, pub, msgs, 30.0)
    t_end = time.monotonic()
    all_received = h.spin_until(lambda: h.diag("", "frames_received") >= len(msgs), 5.0)
    received_after = time.monotonic() - t_end
    settled = wait_settled(h, "", len(msgs), 10.0)
    out = {"sent": len(msgs), "publish_sec": took, "all_received": all_received,
           "received_lag_sec": received_after, "settled": settled, "max_depth": max(depths, default=-1),
           "depth_samples": len(depths), "diag": dict(h.diagnostics[""]), "alive": node.alive()}
    out["rc"] = node.stop()
    out["log"] = node.tail()
    return out


def yaml_params(h: Harness, a: argparse.Namespace) -> dict[str, Any]:
    """In-process node from a real --params-file: the core config it built, and descriptors."""
    from tiny_extractor import build
    from vpr_ros.nodes.loop_closure_node import LoopClosureNode

    node = LoopClosureNode(extractor_factory=build)
    try:
        top_k = node.describe_parameter("index.top_k")
        sim = node.describe_parameter("keyframes.max_similarity")
        read_only = node.set_parameters([Parameter("index.top_k", value=9)])[0]
        debug = node.set_parameters([Parameter("debug.image", value=True)])[0]
        return {"config": config_to_flat(node.config), "settings": node.settings.__dict__,
                "top_k_range": [top_k.integer_range[0].from_value, top_k.integer_range[0].to_value],
                "top_k_read_only": top_k.read_only, "top_k_description": top_k.description,
                "sim_range": [sim.floating_point_range[0].from_value, sim.floating_point_range[0].to_value],
                "set_read_only": read_only.successful, "set_debug": debug.successful,
                "debug_now": node._debug, "num_keyframes": node.detector.num_keyframes,
                "sessions": sorted({kf.session_id for kf in node.detector.keyframes})}
    finally:
        node.close()
        node.destroy_node()


def invalid_params(h: Harness, a: argparse.Namespace) -> dict[str, Any]:
    """Start one node per bad parameter set at once; each must exit non-zero naming the problem."""
    cases = json.loads(a.cases)
    nodes = {name: NodeProcess(["--ros-args", "-r", f"__node:=bad_{i}", *TEST_PARAMS, *args],
                               Path(a.tmp) / f"node_bad_{i}.log")
             for i, (name, args) in enumerate(cases.items())}
    out = {}
    for name, node in nodes.items():
        rc = node.wait(60.0)  # all cases start at once: on 2 busy cores their imports queue up
        if rc is None:
            rc = node.stop()
            out[name] = {"rc": rc, "timed_out": True, "log": node.tail()}
        else:
            node.stop()
            out[name] = {"rc": rc, "timed_out": False, "log": node.tail()}
    return out


def stereo_pose(h: Harness, a: argparse.Namespace) -> dict[str, Any]:
    """Real default model, EuRoC raw stereo + CameraInfo through the launch config: 1 revisits 0;
    ~/reset; 3 revisits 2 (the reset keeps 3 from closing on 0 or 1, whose accuracy is unknown).
    ``--mono``: the left camera only (essential matrix)."""
    from euroc_stream import load_euroc, stereo_camera_infos
    euroc = load_euroc()
    topics = {"image_topic": "/cam0/image_raw", "camera_info_topic": "/cam0/camera_info",
              "right_image_topic": "/cam1/image_raw", "right_camera_info_topic": "/cam1/camera_info",
              "odom_topic": ""}
    if a.mono:
        topics.update(right_image_topic="", right_camera_info_topic="")
    cfg = node_launch_config(topics)
    extra = ["-p", "qos.reliability:=reliable", "-p", "qos.depth:=100", "-p", "diagnostics.period_sec:=0.2",
             "-p", "verify.temporal_consistency:=1", "-p", "detector.min_loop_gap_sec:=1.0",
             "-p", "sync.max_wait_sec:=2.0"]
    node = NodeProcess([*to_ros_args(cfg), *extra], Path(a.tmp) / "node_stereo.log")
    pubs = {k: h.create_publisher(CameraInfo if k.endswith("info_topic") else Image, t, RELIABLE)
            for k, t in topics.items() if t}
    h.watch("")
    wait_ready(h, pubs["image_topic"], "", node, 40.0)
    h.spin_until(lambda: all(p.get_subscription_count() >= 1 for p in pubs.values()), 10.0)
    images = euroc["images"]
    # A driver streams CameraInfo before the first image; wait until the node holds both, so the
    # first keyframe (the first loop's match) gets its stereo depth even when DDS delivers late.
    infos = stereo_camera_infos(euroc["rig"], 99 * 10**9)
    for _ in range(50):
        pubs["camera_info_topic"].publish(infos[0])
        if not a.mono:
            pubs["right_camera_info_topic"].publish(infos[1])
        h.spin_for(0.2)
        if a.mono or h.diag("", "right_camera_info_received", 0) >= 1:
            break
    sent = 0
    for i, name in enumerate(("left_img_0", "left_img_1", "left_img_2", "left_img_3")):
        if i == 2:
            h.call(Trigger, "/loop_closure_node/reset", Trigger.Request())
        stamp = (100 + 100 * i) * 10**9
        left_info, right_info = stereo_camera_infos(euroc["rig"], stamp)
        pubs["camera_info_topic"].publish(left_info)
        if not a.mono:
            pubs["right_camera_info_topic"].publish(right_info)
            # Right before left: the sync must still pair them (and max_wait covers the other order).
            pubs["right_image_topic"].publish(rgb_to_image_msg(images[name.replace("left", "right")], stamp,
                                                               "cam1"))
        h.spin_for(0.1)
        pubs["image_topic"].publish(rgb_to_image_msg(images[name], stamp, "cam0"))
        sent += 1
        settled = wait_settled(h, "", sent, 30.0)
    h.spin_for(0.5)  # loops go out before frames_processed counts the frame
    diag = dict(h.diagnostics[""])
    loops = [{**loop_dict(m), "translation_scale_known": m.translation_scale_known,
              "geometry_method": m.geometry_method, "geometry_rejection": m.geometry_rejection,
              "geometric_inliers": m.geometric_inliers,
              "position": [m.relative_pose.pose.position.x, m.relative_pose.pose.position.y,
                           m.relative_pose.pose.position.z],
              "orientation": [m.relative_pose.pose.orientation.x, m.relative_pose.pose.orientation.y,
                              m.relative_pose.pose.orientation.z, m.relative_pose.pose.orientation.w],
              "covariance": list(m.relative_pose.covariance)} for m in h.loops]
    return {"loops": loops, "diag": diag, "settled": settled, "rc": node.stop(), "log": node.tail()}


def markers(h: Harness, a: argparse.Namespace) -> dict[str, Any]:
    """Odometry + a corridor revisit: the node draws keyframes and loop edges on 'markers'."""
    from visualization_msgs.msg import MarkerArray
    node = NodeProcess(["--ros-args", "-r", "__ns:=/mk", *TEST_PARAMS, "-p", "verify.min_matches:=60",
                        "-p", "queue.size:=100", "-p", "keyframes.min_translation_m:=0.0",
                        "-p", "keyframes.min_rotation_deg:=0.0"], Path(a.tmp) / "node_markers.log")
    pub = h.create_publisher(Image, "/mk/image", RELIABLE)
    odom_pub = h.create_publisher(Odometry, "/mk/odom", RELIABLE)
    got: list[Any] = []
    h.create_subscription(MarkerArray, "/mk/markers", got.append, 10)
    h.watch("mk")
    wait_ready(h, pub, "mk", node, 20.0)
    h.spin_until(lambda: odom_pub.get_subscription_count() >= 1, 5.0)
    frames = corridor_revisit(a.frames)
    for i, (stamp, img) in enumerate(frames):
        odom = Odometry()  # the revisit drives the same straight line again: x = place index, metres
        odom.header.stamp = ns_to_stamp(stamp)
        odom.header.frame_id = "odom"  # the markers must be drawn in this frame
        odom.pose.pose.position.x = float(i % a.frames)
        odom.pose.pose.position.y = 0.0 if i < a.frames else 0.2
        odom.pose.pose.orientation.w = 1.0
        odom_pub.publish(odom)
        h.spin_for(0.02)
        pub.publish(rgb_to_image_msg(img, stamp, "camera"))
        h.spin_for(0.05)
    wait_settled(h, "mk", len(frames), 20.0)
    h.spin_until(lambda: bool(got) and len(got[-1].markers[1].points) >= len(frames), 5.0)
    last = got[-1] if got else None
    rc = node.stop()
    return {"count": len(got), "loops": len(h.loops), "rc": rc, "log": node.tail(),
            "keyframe_points": None if last is None else len(last.markers[1].points),
            "edge_points": None if last is None else len(last.markers[2].points),
            "frame_id": None if last is None else last.markers[1].header.frame_id,
            "diag": dict(h.diagnostics.get("mk", {}))}


def pipeline_modes(h: Harness, a: argparse.Namespace) -> dict[str, Any]:
    """The same corridor revisit into a pipelined (/pipe) and a sequential (/seq) node, faster than a
    slowed model, so the pipelined node always has a frame in each stage; both loop lists."""
    import os
    os.environ["VPR_TEST_EXTRACT_DELAY_SEC"] = "0.01"  # the nodes inherit it (tiny_extractor.build)
    common = [*TEST_PARAMS, "-p", "verify.min_matches:=60", "-p", "queue.size:=200"]
    nodes = {ns: NodeProcess(["--ros-args", "-r", f"__ns:=/{ns}", *common, "-p", f"pipeline:={ns == 'pipe'}"],
                             Path(a.tmp) / f"node_{ns}.log") for ns in ("pipe", "seq")}
    loops: dict[str, list[LoopClosure]] = {ns: [] for ns in nodes}
    pubs = {}
    for ns in nodes:
        pubs[ns] = h.create_publisher(Image, f"/{ns}/image", RELIABLE)
        h.create_subscription(LoopClosure, f"/{ns}/loop_closures", loops[ns].append, RELIABLE)
        h.create_subscription(DiagnosticArray, f"/{ns}/diagnostics", lambda m, ns=ns: h._on_diag(ns, m), 10)
    for ns, node in nodes.items():
        wait_ready(h, pubs[ns], ns, node, 20.0)
    msgs = [rgb_to_image_msg(img, stamp, "camera") for stamp, img in corridor_revisit(a.frames)]
    start = time.monotonic()
    for i, msg in enumerate(msgs):
        for pub in pubs.values():
            pub.publish(msg)
        h.spin_until(lambda: time.monotonic() >= start + (i + 1) / a.rate, 1.0)
    settled = [wait_settled(h, ns, len(msgs), 30.0) for ns in nodes]
    h.spin_for(0.3)  # loop closures are published before frames_processed counts the frame
    out: dict[str, Any] = {"settled": settled, "diag": {ns: dict(h.diagnostics.get(ns, {})) for ns in nodes},
                           "loops": {ns: [loop_dict(m) for m in loops[ns]] for ns in nodes}}
    out["rc"] = {ns: node.stop() for ns, node in nodes.items()}
    out["log"] = "".join(node.tail()[-1500:] for node in nodes.values())
    return out


SCENARIOS = {f.__name__: f for f in (revisit, map_services, bad_inputs, back_pressure, yaml_params,
                                     invalid_params, map_faults, autosave, stereo_pose, markers, append_kill,
                                     pipeline_modes)}


def main() -> int:
    parser = scenario_parser(SCENARIOS, frames=20)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--launch-args", default="{}")
    parser.add_argument("--params-file", default="")
    parser.add_argument("--ros-arg", action="append", default=[])
    parser.add_argument("--cases", default="{}")
    parser.add_argument("--mono", action="store_true")
    a = parser.parse_args()
    # yaml_params builds its node in this process, so the context carries its command line.
    return run_scenario_main(SCENARIOS, a, ["--ros-args", "--params-file", a.params_file, *a.ros_arg]
                             if a.name == "yaml_params" else None)



if __name__ == "__main__":
    sys.exit(main())
