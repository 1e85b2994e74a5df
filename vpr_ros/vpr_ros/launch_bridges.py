"""Launch arguments of the backend bridges (``launch/<backend>_bridge.launch.py``) -> node parameters
and remappings, as a pure function.

Each launch file calls :func:`bridge_launch_config` inside an ``OpaqueFunction``; the tests call it too
and start the real bridge with exactly its output (``launch_args.to_ros_args``). No ROS imports here.
docs/backends.md says, per backend, what the remaps connect and what the backend does with our loops.

Remapped names stay relative unless given absolute, so ``namespace:=robot1`` moves the bridge and
its peer's topics together (``rtabmap/add_link`` -> ``/robot1/rtabmap/add_link``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from vpr_ros.launch_args import NodeLaunchConfig, to_ros_args

__all__ = ["Bridge", "BRIDGES", "COMMON_BRIDGE_ARGUMENTS", "bridge_arguments", "bridge_launch_config",
           "bridge_ros_args"]

_NUMBER = ("max_stamp_diff_sec", "min_separation_sec")


@dataclasses.dataclass(frozen=True)
class Bridge:
    """One backend: its executable (also the node name) and its own launch arguments."""

    executable: str
    arguments: dict[str, tuple[str, str]]


#: Arguments of every bridge launch file: name -> (default, description).
COMMON_BRIDGE_ARGUMENTS: dict[str, tuple[str, str]] = {
    "namespace": ("", "Namespace of the bridge and its relative topics (e.g. robot1); empty for none."),
    "loop_closures_topic": ("loop_closures", "vpr_ros_msgs/LoopClosure topic of the loop_closure_node whose "
                                             "loops are passed on (relative to the namespace unless absolute)."),
    "keyframes_topic": ("keyframes", "vpr_ros_msgs/Keyframe topic of the same loop_closure_node (keyframe ids, "
                                     "stamps and odometry poses)."),
    "robot_id": ("", "Our robot id (detector.robot_id) whose loops are passed on; empty: the robot of the first "
                     "keyframe received."),
    "odom_topic": ("odom", "nav_msgs/Odometry of the same source as the keyframes' poses, used for keyframes "
                           "that carry no pose."),
    "base_from_body": ("", "Pose of the loops' body frame in the base frame as 'x y z qx qy qz qw' (m, unit "
                           "quaternion); empty (identity) for loop_closure_node's loops, which are already of "
                           "the base frame; the camera's mounting only for loops of a camera frame."),
    "use_sim_time": ("false", "Use /clock (bag replay) instead of the wall clock: true or false."),
}

BRIDGES: dict[str, Bridge] = {
    "rtabmap": Bridge("rtabmap_bridge", {
        "rtabmap_namespace": ("rtabmap", "Namespace of RTAB-Map's rtabmap node (its add_link service and its "
                                         "mapData and mapGraph topics), relative to ours; empty for none."),
        "max_stamp_diff_sec": ("", "Largest stamp difference between a keyframe and its RTAB-Map node, seconds "
                                   "(rtabmap.max_stamp_diff_sec, 1/Rtabmap/DetectionRate); empty: 1.0."),
    }),
    "cslam": Bridge("cslam_bridge", {
        "cslam_robot_id": ("", "Our robot's cslam robot_id (cslam.robot_id); empty: from robot_names or the "
                               "number our robot id ends with."),
        "robot_names": ("", "Comma-separated vpr_ros robot ids in cslam robot id order (cslam.robot_names); "
                            "empty: the number each robot id ends with."),
    }),
    "hydra": Bridge("hydra_bridge", {
        "output_topic": ("external_loop_closures", "Where the consumer takes pose_graph_tools_msgs/PoseGraph "
                                                   "loop closures (Hydra: external_loop_closures in its namespace)."),
        "key_mode": ("", "Edge keys and direction (hydra.key_mode): stamp_ns (Hydra: stamps, from = query) or "
                         "index (Kimera-PGMO / Kimera-Multi: keyframe indices, from = match); empty: stamp_ns."),
        "robot_names": ("", "Comma-separated vpr_ros robot ids in the consumer's robot id order "
                            "(hydra.robot_names); empty: the number each robot id ends with."),
    }),
    "lio_sam": Bridge("lio_sam_bridge", {
        "output_topic": ("lio_loop/loop_closure_detection", "LIO-SAM's external loop topic "
                                                            "(std_msgs/Float64MultiArray [t_cur, t_pre])."),
        "min_separation_sec": ("", "Smallest time between the two keyframes of a loop sent, seconds "
                                   "(lio_sam.min_separation_sec, LIO-SAM's historyKeyframeSearchTimeDiff); "
                                   "empty: 30."),
    }),
}


def bridge_arguments(backend: str) -> dict[str, tuple[str, str]]:
    """Every launch argument of ``<backend>_bridge.launch.py``."""
    return {**COMMON_BRIDGE_ARGUMENTS, **_bridge(backend).arguments}


def _bridge(backend: str) -> Bridge:
    if backend not in BRIDGES:
        raise ValueError(f"unknown backend {backend!r}; one of: {', '.join(BRIDGES)}")
    return BRIDGES[backend]


def _bool(name: str, value: str) -> bool:
    text = value.strip().lower()
    if text in ("true", "1", "yes", "on", "false", "0", "no", "off", ""):
        return text in ("true", "1", "yes", "on")
    raise ValueError(f"launch argument {name}:={value!r} must be true or false")


def _pose(value: str) -> list[float]:
    parts = value.replace(",", " ").replace("[", " ").replace("]", " ").split()
    try:
        numbers = [float(p) for p in parts]
    except ValueError:
        numbers = []
    if len(numbers) != 7:
        raise ValueError(f"launch argument base_from_body:={value!r} must be 7 numbers 'x y z qx qy qz qw'")
    return numbers


def _join(namespace: str, name: str) -> str:
    return f"{namespace.strip('/')}/{name}" if namespace.strip("/") else name


def bridge_launch_config(backend: str, args: Mapping[str, str]) -> NodeLaunchConfig:
    """Launch argument values (strings) of one backend's bridge -> NodeLaunchConfig. Missing keys take
    their defaults; an unknown argument or a malformed value raises ValueError naming it."""
    bridge = _bridge(backend)
    known = bridge_arguments(backend)
    unknown = sorted(set(args) - set(known))
    if unknown:
        raise ValueError(f"unknown launch argument(s) {', '.join(unknown)} of {backend}_bridge; known: "
                         f"{', '.join(known)}")
    v = {name: str(args.get(name, default)).strip() for name, (default, _) in known.items()}
    overrides: dict[str, Any] = {"use_sim_time": _bool("use_sim_time", v["use_sim_time"])}
    if v["robot_id"]:
        overrides["robot_id"] = v["robot_id"]
    if v["base_from_body"]:
        overrides["base_from_body"] = _pose(v["base_from_body"])
    for name in _NUMBER:
        if v.get(name):
            try:
                number = float(v[name])
            except ValueError:
                raise ValueError(f"launch argument {name}:={v[name]!r} must be a number of seconds") from None
            overrides[("rtabmap." if name.startswith("max") else "lio_sam.") + name] = number
    remaps = [("loop_closures", v["loop_closures_topic"] or "loop_closures"),
              ("keyframes", v["keyframes_topic"] or "keyframes"), ("odom", v["odom_topic"] or "odom")]
    if backend == "rtabmap":
        remaps += [(name, _join(v["rtabmap_namespace"], name)) for name in ("add_link", "mapData", "mapGraph")]
    elif backend == "cslam":
        if v["cslam_robot_id"]:
            try:
                overrides["cslam.robot_id"] = int(v["cslam_robot_id"])
            except ValueError:
                raise ValueError(f"launch argument cslam_robot_id:={v['cslam_robot_id']!r} "
                                 "must be an integer") from None
        if v["robot_names"]:
            overrides["cslam.robot_names"] = v["robot_names"]
    elif backend == "hydra":
        if v["key_mode"]:
            if v["key_mode"] not in ("stamp_ns", "index"):
                raise ValueError(f"launch argument key_mode:={v['key_mode']!r} must be stamp_ns or index")
            overrides["hydra.key_mode"] = v["key_mode"]
        if v["robot_names"]:
            overrides["hydra.robot_names"] = v["robot_names"]
        remaps.append(("external_loop_closures", v["output_topic"] or "external_loop_closures"))
    elif backend == "lio_sam":
        remaps.append(("lio_loop/loop_closure_detection", v["output_topic"] or "lio_loop/loop_closure_detection"))
    return NodeLaunchConfig(namespace=v["namespace"].strip("/"), name=bridge.executable, params_files=(),
                            overrides=overrides, remappings=tuple(remaps))


def bridge_ros_args(config: NodeLaunchConfig) -> list[str]:
    """``launch_args.to_ros_args`` for a bridge: list values (base_from_body) as YAML lists."""
    scalars = {k: v for k, v in config.overrides.items() if not isinstance(v, list)}
    argv = to_ros_args(dataclasses.replace(config, overrides=scalars))
    at = len(argv) - 2 * len(config.remappings)  # the -p options go before the remappings
    lists = [a for k, v in config.overrides.items() if isinstance(v, list)
             for a in ("-p", f"{k}:=[{', '.join(repr(float(x)) for x in v)}]")]
    return argv[:at] + lists + argv[at:]
