"""``central_node``: one process ingests several robots' cameras into one shared map (docs/fleet.md).

    ros2 run vpr_ros central_node --robots robot1,robot2 --ros-args --params-file loop_closure.yaml

For each robot namespace it runs a ``loop_closure_node`` (same parameters, ``detector.robot_id`` =
the namespace) subscribed to ``<robot>/image`` (and ``<robot>/odom``, ...) and publishing on
``<robot>/loop_closures``. The nodes share their keyframes in memory (:class:`SharedMap`, the
keyframe objects themselves: one copy of the local features), so every robot's new keyframe is
searched against every robot's map; an inter-robot loop carries both robot ids and is published by
both robots' nodes. Per-robot state (keyframe selection, temporal consistency, odometry) stays per
robot. The first robot's node saves the whole shared map (``map.save_path``); the others save nothing.

Use it where one machine sees every camera (a base station, bag replay); a fleet on a radio link
runs one ``loop_closure_node`` per robot with ``fleet.enabled`` instead (nodes/fleet.py).
"""

from __future__ import annotations

import argparse
import collections
import sys
import threading
from typing import Sequence

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.utilities import remove_ros_args

from vpr_ros.core.errors import VprError
from vpr_ros.core.types import Keyframe, LoopClosure
from vpr_ros.nodes import conversions as conv
from vpr_ros.nodes.input_health import params_file_problem
from vpr_ros.nodes.loop_closure_node import LoopClosureNode

__all__ = ["SharedMap", "parse_robots", "main"]


def parse_robots(text: str) -> list[str]:
    """'robot1, /robot2' -> ['robot1', 'robot2']; raises ValueError when empty or repeated."""
    robots = [r.strip().strip("/") for r in text.split(",") if r.strip().strip("/")]
    if not robots or len(set(robots)) != len(robots):
        raise ValueError(f"--robots {text!r} must list distinct robot namespaces, e.g. robot1,robot2")
    return robots


class SharedMap:
    """The in-process fleet of the central node: members see each other's keyframes and loops."""

    def __init__(self) -> None:
        self.members: list[_Member] = []

    def join(self, node: LoopClosureNode) -> _Member:
        member = _Member(self, node)
        self.members.append(member)
        return member


class _Member:
    """One robot's node in a SharedMap (implements nodes.fleet.Fleet)."""

    def __init__(self, shared: SharedMap, node: LoopClosureNode) -> None:
        self._shared, self.node = shared, node
        self.robot_id = node.config.detector.robot_id
        self._inbox: collections.deque[Keyframe] = collections.deque()
        self._mutex = threading.Lock()

    def keyframe(self, kf: Keyframe) -> None:
        # Queued, not indexed here: this runs under our detector lock, and taking another robot's
        # lock while holding ours could deadlock with that robot doing the same.
        for member in self._shared.members:
            if member is not self:
                with member._mutex:
                    member._inbox.append(kf)

    def drain(self) -> None:
        with self._mutex:
            keyframes = list(self._inbox)
            self._inbox.clear()
        if keyframes:
            with self.node._detector_lock:
                added = self.node.detector.add_remote_keyframes(keyframes)
            self.node.stats.count("fleet.remote_keyframes", added)

    def loops(self, loops: Sequence[LoopClosure]) -> None:
        for loop in loops:
            if loop.match_robot_id == loop.query_robot_id:
                continue
            self.node.stats.count("fleet.inter_robot_loops.found")
            for member in self._shared.members:  # both robots publish the inter-robot loop
                if member.robot_id == loop.match_robot_id:
                    member.node._loop_pub.publish(conv.loop_closure_to_msg(loop, member.node.config.frames.base_frame))
                    member.node.stats.count("fleet.inter_robot_loops.received")
                    member.node.stats.count("loop_closures")

    def diagnostics(self) -> dict[str, str]:
        return {"fleet.mode": "central", "fleet.robots": ",".join(m.robot_id for m in self._shared.members)}


def main(args: list[str] | None = None) -> int:
    """Entry point; non-zero exit on a startup failure (bad parameter, model or robots list)."""
    argv = sys.argv if args is None else args
    problem = params_file_problem(argv)
    if problem:  # rcl would raise an RCLError traceback
        print(f"central_node: startup failed: {problem}", file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(prog="central_node", description=__doc__.split("\n")[0])
    parser.add_argument("--robots", default="robot1,robot2", help="comma-separated robot namespaces")
    try:
        robots = parse_robots(parser.parse_args(remove_ros_args(argv)[1:]).robots)
    except ValueError as exc:
        print(f"central_node: startup failed: {exc}", file=sys.stderr)
        return 2
    rclpy.init(args=argv)
    shared = SharedMap()
    nodes: list[LoopClosureNode] = []
    executor = SingleThreadedExecutor()
    try:
        for i, robot in enumerate(robots):
            overrides = [Parameter("detector.robot_id", Parameter.Type.STRING, robot)]
            if i:  # one writer of the shared map; the first node's map holds every robot's keyframes
                overrides.append(Parameter("map.save_path", Parameter.Type.STRING, ""))
            nodes.append(LoopClosureNode(namespace=robot, parameter_overrides=overrides,
                                         fleet_factory=shared.join))
            executor.add_node(nodes[-1])
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except VprError as exc:
        print(f"central_node: startup failed: {exc}", file=sys.stderr)
        return 2
    finally:
        for node in nodes:
            node.close()
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
