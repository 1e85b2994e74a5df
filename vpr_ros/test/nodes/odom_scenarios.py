"""DDS scenarios of odometry at the image rate (issue 19, test_node_odometry.py), run as a script
inside a private network namespace:

    python odom_scenarios.py NAME --out result.json --tmp DIR --deadline SEC [--frames N]

Real ``loop_closure_node`` processes, a real rclpy harness publishing images and nav_msgs/Odometry;
the result carries each node's diagnostics and the poses of the keyframes in its saved live map.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from nav_msgs.msg import Odometry
from sensor_msgs.msg import Image

from vpr_ros.core.map.live_map import MapLog
from vpr_ros.nodes.conversions import ns_to_stamp, rgb_to_image_msg

from revisit_data import corridor_revisit
from scenario_harness import RELIABLE, TEST_PARAMS, Harness, NodeProcess, run_scenario_main, scenario_parser, wait_settled

PERIOD_NS = 250_000_000  # 4 Hz: the previous odometry is older than odom.max_age_sec (0.2 s)
START_NS = 1_000_000_000


def odometry(stamp_ns: int, x: float) -> Odometry:
    msg = Odometry()
    msg.header.stamp = ns_to_stamp(stamp_ns)
    msg.header.frame_id, msg.child_frame_id = "odom", "base_link"
    msg.pose.pose.position.x = x
    msg.pose.pose.orientation.w = 1.0
    return msg


def map_poses(path: Path) -> list[tuple[int, float | None]]:
    """(stamp, x of the stored pose or None) of every keyframe in the node's live map."""
    log = MapLog(path)
    try:
        return [(kf.stamp_ns, None if kf.pose is None else float(kf.pose[0, 3])) for kf in log.keyframes]
    finally:
        log.close()


def image_rate(h: Harness, a: argparse.Namespace) -> dict[str, Any]:
    """Images and odometry with the same stamps at the same rate (4 Hz), each odometry message 40 ms
    after its image (the order a driver publishes them in); the robot moves 1 m per frame. /od runs
    the defaults (odom.wait_sec 0.1), /nw odom.wait_sec 0 (no waiting): both count their misses."""
    nodes = {ns: NodeProcess(["--ros-args", "-r", f"__ns:=/{ns}", "-r", "image:=/cam/image", "-r", "odom:=/cam/odom",
                              *TEST_PARAMS, "-p", "queue.size:=100", "-p", "input.timeout_sec:=60.0",
                              "-p", f"map.save_path:={Path(a.tmp) / ('map_' + ns)}", *extra],
                             Path(a.tmp) / f"node_{ns}.log")
             for ns, extra in (("od", []), ("nw", ["-p", "odom.wait_sec:=0.0"]))}
    for ns in nodes:
        h.watch(ns)
    images = h.create_publisher(Image, "/cam/image", RELIABLE)
    odom = h.create_publisher(Odometry, "/cam/odom", RELIABLE)
    out: dict[str, Any] = {}
    try:
        ready = h.spin_until(lambda: images.get_subscription_count() >= 2 and odom.get_subscription_count() >= 2
                             and all(ns in h.diagnostics for ns in nodes), 30.0)
        if not ready:
            raise RuntimeError("nodes not ready:" + "".join(n.tail() for n in nodes.values()))
        frames = corridor_revisit(a.frames)[:a.frames]
        start = time.monotonic()
        for i, (_, rgb) in enumerate(frames):
            stamp = START_NS + i * PERIOD_NS
            images.publish(rgb_to_image_msg(rgb, stamp, "camera"))
            h.spin_until(lambda: time.monotonic() >= start + i * 0.25 + 0.04, 1.0)
            odom.publish(odometry(stamp, float(i)))
            h.spin_until(lambda: time.monotonic() >= start + (i + 1) * 0.25, 1.0)
        out["settled"] = all(wait_settled(h, ns, len(frames), 20.0) for ns in nodes)
        for ns in nodes:
            h.diagnostics.pop(ns, None)
        h.spin_until(lambda: all(ns in h.diagnostics for ns in nodes), 3.0)
        out["frames"] = len(frames)
        out["diag"] = {ns: dict(h.diagnostics.get(ns, {})) for ns in nodes}
    finally:
        out["rc"] = {ns: n.stop() for ns, n in nodes.items()}
        out["log"] = "".join(f"\n--- {ns}\n{n.tail()[-1500:]}" for ns, n in nodes.items())
    out["poses"] = {ns: map_poses(Path(a.tmp) / f"map_{ns}") for ns in nodes}
    return out


SCENARIOS = {f.__name__: f for f in (image_rate,)}


def main() -> int:
    return run_scenario_main(SCENARIOS, scenario_parser(SCENARIOS, frames=24).parse_args())


if __name__ == "__main__":
    sys.exit(main())
