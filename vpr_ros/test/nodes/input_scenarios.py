"""DDS scenarios of the input watch (issue 18, test_input_watch.py), each run as a script inside a
private network namespace:

    python input_scenarios.py NAME --out result.json --tmp DIR --deadline SEC [--frames N]

Real ``loop_closure_node`` processes, a real rclpy harness; the result carries the nodes' diagnostics
(level, message, key/values) and their log files.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import cv2
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from vpr_ros_msgs.msg import LoopClosure

from vpr_ros.launch_args import node_launch_config, to_ros_args
from vpr_ros.nodes.conversions import ns_to_stamp, rgb_to_image_msg

from revisit_data import corridor_revisit
from scenario_harness import (RELIABLE, TEST_PARAMS, Harness, NodeProcess, publish_paced, run_scenario_main,
                              scenario_parser, wait_settled)

BEST_EFFORT = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)


def watch_status(h: Harness, namespaces: list[str]) -> dict[str, tuple[int, str]]:
    """(level, message) of each namespace's latest diagnostics; key/values land in h.diagnostics."""
    status: dict[str, tuple[int, str]] = {}

    def on_diag(ns: str, m: DiagnosticArray) -> None:
        level = m.status[0].level
        status[ns] = (int.from_bytes(level, "little") if isinstance(level, bytes) else int(level), m.status[0].message)
        h._on_diag(ns, m)

    for ns in namespaces:
        h.create_subscription(DiagnosticArray, f"/{ns}/diagnostics", lambda m, ns=ns: on_diag(ns, m), 10)
    return status


def node(ns: str, tmp: str, *args: str) -> NodeProcess:
    return NodeProcess(["--ros-args", "-r", f"__ns:=/{ns}", *TEST_PARAMS, *args], Path(tmp) / f"node_{ns}.log")


def finish(nodes: dict[str, NodeProcess], out: dict[str, Any], h: Harness, status: dict[str, Any]) -> dict[str, Any]:
    out["status"] = dict(status)
    out["diag"] = {ns: dict(h.diagnostics.get(ns, {})) for ns in nodes}
    out["rc"] = {ns: n.stop() for ns, n in nodes.items()}
    out["logs"] = {ns: n.log.read_text() for ns, n in nodes.items()}
    out["log"] = "".join(f"\n--- {ns}\n{n.tail()[-1500:]}" for ns, n in nodes.items())
    return out


def missing_input(h: Harness, a: argparse.Namespace) -> dict[str, Any]:
    """The camera publishes /cam/image_raw (Image) and /cam/image_raw/compressed (CompressedImage).
    /wt listens on a wrong topic, /cz on the compressed topic without image.compressed, /lc is started
    with the launch arguments image_topic + image_compressed:=true and gets frames until they stop."""
    lc = node_launch_config({"namespace": "lc", "image_topic": "/cam/image_raw/compressed",
                             "image_compressed": "true", "odom_topic": ""})
    nodes = {"wt": node("wt", a.tmp, "-r", "image:=/cam/wrong", "-p", "input.timeout_sec:=1.0"),
             "cz": node("cz", a.tmp, "-r", "image:=/cam/image_raw/compressed", "-p", "input.timeout_sec:=1.0"),
             "lc": NodeProcess([*to_ros_args(lc), *TEST_PARAMS, "-p", "input.timeout_sec:=1.0"],
                               Path(a.tmp) / "node_lc.log")}
    status = watch_status(h, list(nodes))
    raw, packed = h.create_publisher(Image, "/cam/image_raw", RELIABLE), h.create_publisher(
        CompressedImage, "/cam/image_raw/compressed", RELIABLE)
    frames = corridor_revisit(a.frames)[:a.frames]
    out: dict[str, Any] = {}
    try:
        h.spin_until(lambda: all(ns in status for ns in nodes) or not all(n.alive() for n in nodes.values()), 20.0)

        def warned(ns: str) -> bool:
            return ns in status and status[ns][0] == 1 and "no image" in status[ns][1]

        i, end = 0, time.monotonic() + 15.0
        while time.monotonic() < end and not (warned("wt") and warned("cz") and h.diag("lc", "frames_received") >= 10):
            stamp, rgb = frames[i % len(frames)]
            stamp += (i // len(frames)) * len(frames) * 1_000_000_000
            raw.publish(rgb_to_image_msg(rgb, stamp, "camera"))
            msg = CompressedImage(format="jpeg", data=cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes())
            msg.header.stamp = ns_to_stamp(stamp)
            packed.publish(msg)
            h.spin_for(0.1)
            i += 1
        h.diagnostics.pop("lc", None)
        h.spin_until(lambda: "lc" in h.diagnostics, 3.0)
        out["while_streaming"] = {"lc": status.get("lc"), "lc_received": h.diag("lc", "frames_received")}
        # The stream stops: after input.timeout_sec /lc warns too (a stall), logged once.
        h.spin_until(lambda: warned("lc"), 5.0)
        h.spin_for(0.5)
    finally:
        out = finish(nodes, out, h, status)
    return out


def qos_mismatch(h: Harness, a: argparse.Namespace) -> dict[str, Any]:
    """A best-effort publisher on the image topic of a node whose subscription is reliable."""
    nodes = {"qm": node("qm", a.tmp, "-p", "input.timeout_sec:=60.0")}
    status = watch_status(h, list(nodes))
    pub = h.create_publisher(Image, "/qm/image", BEST_EFFORT)
    out: dict[str, Any] = {}
    try:
        frames = corridor_revisit(3)[:3]
        end = time.monotonic() + 20.0
        while time.monotonic() < end and not (status.get("qm", (0, ""))[0] == 1 and "QoS" in status["qm"][1]):
            for stamp, rgb in frames:
                pub.publish(rgb_to_image_msg(rgb, stamp, "camera"))
            h.spin_for(0.2)
        h.spin_for(0.3)
    finally:
        out = finish(nodes, out, h, status)
    return out


def stamp_gaps(h: Harness, a: argparse.Namespace) -> dict[str, Any]:
    """10 frames 100 ms apart, then 20 frames 400 ms apart (3 lost before each): 60 of 90 lost."""
    nodes = {"sg": node("sg", a.tmp, "-p", "input.timeout_sec:=60.0", "-p", "queue.size:=100")}
    status = watch_status(h, list(nodes))
    pub = h.create_publisher(Image, "/sg/image", RELIABLE)
    out: dict[str, Any] = {}
    try:
        h.spin_until(lambda: pub.get_subscription_count() >= 1 and "sg" in status, 20.0)
        period = 100_000_000
        ticks = [*range(10), *range(13, 13 + 4 * 20, 4)]
        images = corridor_revisit(len(ticks))[:len(ticks)]
        msgs = [rgb_to_image_msg(rgb, 1_000_000_000 + t * period, "camera") for t, (_, rgb) in zip(ticks, images)]
        publish_paced(h, pub, msgs, 30.0)
        out["settled"] = wait_settled(h, "sg", len(msgs), 15.0)
        status.pop("sg", None)  # a status from before the last frames counted them not: wait for a fresh one
        h.spin_until(lambda: status.get("sg", (0, ""))[0] == 1 and "lost" in status["sg"][1], 5.0)
    finally:
        out = finish(nodes, out, h, status)
    return out


def loops_logged(h: Harness, a: argparse.Namespace) -> dict[str, Any]:
    """The Corridor revisit: every published loop is summarised in the log (at most one line a second);
    regular stamps (1 s, then a pause) count no lost frame and leave the level OK."""
    nodes = {"ll": node("ll", a.tmp, "-p", "verify.min_matches:=60", "-p", "queue.size:=200",
                        "-p", "input.timeout_sec:=60.0")}
    status = watch_status(h, list(nodes))
    loops: list[LoopClosure] = []
    h.create_subscription(LoopClosure, "/ll/loop_closures", loops.append, RELIABLE)
    pub = h.create_publisher(Image, "/ll/image", RELIABLE)
    out: dict[str, Any] = {}
    try:
        h.spin_until(lambda: pub.get_subscription_count() >= 1 and "ll" in status, 20.0)
        msgs = [rgb_to_image_msg(img, stamp, "camera") for stamp, img in corridor_revisit(a.frames)]
        publish_paced(h, pub, msgs, 20.0)
        out["settled"] = wait_settled(h, "ll", len(msgs), 20.0)
        h.spin_for(1.5)  # the last summary line: at most a second after the last loop
        h.diagnostics.pop("ll", None)
        h.spin_until(lambda: "ll" in h.diagnostics, 3.0)
        out["loops"] = len(loops)
    finally:
        out = finish(nodes, out, h, status)
    return out


SCENARIOS = {f.__name__: f for f in (missing_input, qos_mismatch, stamp_gaps, loops_logged)}


def main() -> int:
    return run_scenario_main(SCENARIOS, scenario_parser(SCENARIOS, frames=20).parse_args())


if __name__ == "__main__":
    sys.exit(main())
