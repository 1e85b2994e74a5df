"""``python -m vpr_ros.nodes.bag_player BAG``: play a rosbag2 onto ROS 2 topics where there is no
``ros2 bag play`` (rclpy from PyPI wheels, no ROS 2 CLI), e.g. to feed the node in the walkthrough of
docs/relocalization.md.

Every topic whose message type is importable (``sensor_msgs/msg/Image`` -> ``sensor_msgs.msg.Image``) is
published with reliable QoS (depth 100), in bag order, keeping the bag's time between messages
(divided by ``--rate``). Before the first message it waits up to ``--wait-sec`` for every topic to
have a subscriber, so a node that is still starting does not miss the first frames. Messages are
published as recorded: header stamps are the bag's (consumers that need them, like vpr_ros, use
stamps only; ``use_sim_time`` is not needed). On a ROS install use ``ros2 bag play`` instead.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path
from typing import Any

import rclpy
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from rosbags.highlevel import AnyReader

from vpr_ros.io.msgdefs import typestore

__all__ = ["message_class", "main"]

QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE)


def message_class(msgtype: str) -> Any | None:
    """'pkg/msg/Name' -> the rclpy message class, or None when its package is not importable."""
    pkg, _, name = msgtype.partition("/msg/")
    try:
        return getattr(importlib.import_module(f"{pkg}.msg"), name)
    except (ImportError, AttributeError, ValueError):
        return None


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m vpr_ros.nodes.bag_player", description=__doc__.split("\n\n")[0])
    p.add_argument("bag", help="rosbag2 directory (with metadata.yaml)")
    p.add_argument("--rate", type=float, default=1.0, help="playback speed factor (2: twice as fast)")
    p.add_argument("--topics", default="", help="comma-separated topics to play (default: all)")
    p.add_argument("--wait-sec", type=float, default=10.0,
                   help="wait this long for a subscriber on every topic before playing, seconds")
    return p.parse_args(argv)


def play(node: Node, bag: Path, rate: float, topics: set[str], wait_sec: float) -> dict[str, int]:
    """Publish the bag's messages; returns the count per topic."""
    with AnyReader([bag], default_typestore=typestore()) as reader:
        conns = [c for c in reader.connections if not topics or c.topic in topics]
        classes = {c.topic: message_class(c.msgtype) for c in conns}
        for topic, cls in classes.items():
            if cls is None:
                node.get_logger().warning(f"{topic}: message type not importable here, not played")
        pubs = {t: node.create_publisher(cls, t, QOS) for t, cls in classes.items() if cls is not None}
        end = time.monotonic() + wait_sec
        while time.monotonic() < end and not all(p.get_subscription_count() for p in pubs.values()):
            rclpy.spin_once(node, timeout_sec=0.1)
        counts = dict.fromkeys(pubs, 0)
        start_wall, start_bag = time.monotonic(), None
        for conn, bag_ns, raw in reader.messages(connections=[c for c in conns if c.topic in pubs]):
            start_bag = bag_ns if start_bag is None else start_bag
            delay = start_wall + (bag_ns - start_bag) / 1e9 / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            pubs[conn.topic].publish(deserialize_message(raw, classes[conn.topic]))
            counts[conn.topic] += 1
        rclpy.spin_once(node, timeout_sec=0.5)  # let reliable deliveries finish before the node goes
    return counts


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    bag = Path(args.bag).expanduser()
    if not (bag / "metadata.yaml").is_file():
        print(f"bag_player: {bag} is not a rosbag2 directory (no metadata.yaml); give the folder ros2 bag record "
              "or vpr-ros bag made", file=sys.stderr)
        return 2
    if args.rate <= 0:
        print(f"bag_player: --rate {args.rate} must be > 0", file=sys.stderr)
        return 2
    rclpy.init()
    node = Node("vpr_ros_bag_player")
    try:
        counts = play(node, bag, args.rate, {t.strip() for t in args.topics.split(",") if t.strip()}, args.wait_sec)
        print("bag_player: published " + ", ".join(f"{n} on {t}" for t, n in sorted(counts.items())))
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
