"""Launch arguments of ``pose_graph.launch.py`` -> the nodes it starts, as a pure function.

``pose_graph_node`` always; with ``loop_closure:=true`` (the default) also a ``loop_closure_node`` in the
same namespace with the shared arguments of ``loop_closure.launch.py``, so a robot with only a camera and
odometry gets loops, a pose graph and map -> odom from one command. Both read the same parameter file
(``config``; pose_graph_node takes its ``pose_graph.*`` and ``frames.*``) and the same odometry topic.
The launch file calls :func:`pose_graph_launch_configs` inside an ``OpaqueFunction``; the tests start
the real nodes with exactly its output (``launch_args.to_ros_args``). No ROS imports here.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

from vpr_ros.launch_args import EXECUTABLE, LAUNCH_ARGUMENTS, NodeLaunchConfig, node_launch_config

__all__ = ["POSE_GRAPH_EXECUTABLE", "POSE_GRAPH_ARGUMENTS", "LaunchedNode", "pose_graph_launch_configs"]

POSE_GRAPH_EXECUTABLE = "pose_graph_node"

#: name -> (default value, description); the launch file declares these and every LAUNCH_ARGUMENTS name.
POSE_GRAPH_ARGUMENTS: dict[str, tuple[str, str]] = {
    "loop_closure": ("true", "Also start a loop_closure_node in the same namespace (the shared arguments below "
                             "configure it); false: only pose_graph_node, fed by loop closures running elsewhere."),
    "solver": ("", "pose_graph.solver: isam2 (incremental, the default) or batch (whole-graph optimisation at an "
                   "interval); empty keeps the config file's."),
    "map_frame": ("", "pose_graph.map_frame: the map frame map -> odom is published in; empty keeps the config "
                      "file's (map)."),
    "keyframe_topics": ("", "pose_graph.keyframe_topics: Keyframe topics separated by commas (e.g. "
                            "keyframes,/robot2/keyframes); empty keeps the config file's (keyframes)."),
    "loop_topics": ("", "pose_graph.loop_topics: LoopClosure topics separated by commas (e.g. "
                        "loop_closures,/robot2/loop_closures); empty keeps the config file's (loop_closures)."),
}


def _flag(name: str, value: str) -> bool:
    text = value.strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"launch argument {name}:={value!r} must be true or false")


@dataclasses.dataclass(frozen=True)
class LaunchedNode:
    """One node of the launch: its executable and ``launch_ros.actions.Node`` configuration."""

    executable: str
    config: NodeLaunchConfig


def pose_graph_launch_configs(args: Mapping[str, str]) -> list[LaunchedNode]:
    """Launch argument values (strings) -> the nodes to start (loop_closure_node first, if any).

    Raises ValueError naming an unknown argument, a malformed value, or an empty ``odom_topic`` (the pose
    graph is built on odometry).
    """
    known = set(LAUNCH_ARGUMENTS) | set(POSE_GRAPH_ARGUMENTS)
    unknown = sorted(set(args) - known)
    if unknown:
        raise ValueError(f"unknown launch argument(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    own = {name: str(args.get(name, default)).strip() for name, (default, _) in POSE_GRAPH_ARGUMENTS.items()}
    shared = {name: str(args[name]) for name in LAUNCH_ARGUMENTS if name in args}
    loop_closure = node_launch_config(shared)
    if not str(args.get("odom_topic", LAUNCH_ARGUMENTS["odom_topic"][0])).strip():
        raise ValueError("pose_graph.launch.py needs odom_topic (nav_msgs/Odometry): the pose graph is built on it")
    if own["solver"] and own["solver"] not in ("isam2", "batch"):
        raise ValueError(f"launch argument solver:={own['solver']!r} must be isam2 or batch")
    overrides = {"use_sim_time": loop_closure.overrides["use_sim_time"]}
    robot = loop_closure.overrides.get("detector.robot_id")
    if robot:
        overrides["pose_graph.robot_id"] = robot
    for arg in ("solver", "map_frame", "keyframe_topics", "loop_topics"):
        if own[arg]:
            overrides[f"pose_graph.{arg}"] = own[arg]
    graph = NodeLaunchConfig(namespace=loop_closure.namespace, name=POSE_GRAPH_EXECUTABLE,
                             params_files=loop_closure.params_files, overrides=overrides,
                             remappings=tuple(r for r in loop_closure.remappings if r[0] == "odom"))
    nodes = [LaunchedNode(POSE_GRAPH_EXECUTABLE, graph)]
    if _flag("loop_closure", own["loop_closure"]):
        nodes.insert(0, LaunchedNode(EXECUTABLE, loop_closure))
    return nodes
