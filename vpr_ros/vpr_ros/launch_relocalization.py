"""Launch arguments of ``relocalization.launch.py`` -> node parameters and remappings, as a pure function.

``target:=`` picks the consumer of our ``global_pose`` (``geometry_msgs/PoseWithCovarianceStamped``
of the base frame in the map frame) and remaps it, and the trigger topic, to the names that consumer
takes (:data:`TARGETS`; docs/relocalization.md says what each one does with the pose). The launch file
calls :func:`relocalization_launch_config` inside an ``OpaqueFunction``; the tests call it too and start
the real node with exactly its output (``launch_args.to_ros_args``). No ROS imports here.

Remapped names are relative, as the consumers' own topics are: without a namespace ``initialpose``
resolves to ``/initialpose``; with ``namespace:=robot1`` to ``/robot1/initialpose``, where a
namespaced Nav2 listens.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

from vpr_ros.launch_args import LAUNCH_ARGUMENTS, NodeLaunchConfig, node_launch_config

__all__ = ["Target", "TARGETS", "RTABMAP_INPUTS", "RELOCALIZATION_ARGUMENTS", "SHARED_ARGUMENTS",
           "MODES", "POSE_TOPIC", "TRIGGER_TOPIC", "relocalization_launch_config"]

#: The node's own names (relative; remapped per target).
POSE_TOPIC = "global_pose"
TRIGGER_TOPIC = "relocalize_trigger"
MODES = ("on_demand", "continuous", "once")


@dataclasses.dataclass(frozen=True)
class Target:
    """Where one consumer takes our pose (``pose_topic``) and where it asks for one (``trigger_topic``;
    None: it never asks, our trigger keeps its name). ``owns_map_to_odom``: the consumer broadcasts
    map -> odom itself, so ``publish_tf:=true`` would give odom two parents on /tf."""

    pose_topic: str
    trigger_topic: str | None
    owns_map_to_odom: bool
    consumer: str


#: target name -> Target (sources: ../shared/research/RELOCALIZATION.md, docs/relocalization.md).
TARGETS: dict[str, Target] = {
    "nav2": Target("initialpose", None, True,
                   "Nav2 AMCL: frame_id must be its global_frame_id (map); reads x, y (cov 0, 1, 6, 7), yaw (cov 35)"),
    "slam_toolbox": Target("initialpose", None, True,
                           "slam_toolbox localization mode: x, y, yaw; ignores the covariance and frame_id"),
    "rtabmap": Target("rtabmap/initialpose", None, True,
                      "RTAB-Map localization mode: initialpose (or the global_pose prior, rtabmap_input:=global_pose)"),
    "cuvslam": Target("visual_slam/initial_pose", "visual_slam/trigger_hint", True,
                      "isaac_ros_visual_slam: LocalizeInMap at our pose; its trigger_hint asks us for one"),
    "robot_localization": Target("set_pose", None, True,
                                 "robot_localization EKF/UKF (world_frame map): the filter state is reset to our pose"),
    "none": Target(POSE_TOPIC, None, False, "no consumer: global_pose and relocalize_trigger keep their names"),
}

#: rtabmap_input -> the RTAB-Map topic (relative to the namespace rtabmap's launch files give it).
RTABMAP_INPUTS = {"initialpose": "rtabmap/initialpose", "global_pose": "rtabmap/global_pose"}

#: The arguments shared with loop_closure.launch.py (a localisation session reads its map, never writes it).
SHARED_ARGUMENTS = [name for name in LAUNCH_ARGUMENTS if name != "map_save"]

#: name -> (default value, description); the launch file declares these and :data:`SHARED_ARGUMENTS`.
RELOCALIZATION_ARGUMENTS: dict[str, tuple[str, str]] = {
    "target": ("none", "Consumer of the pose: nav2 and slam_toolbox (initialpose), rtabmap (rtabmap/initialpose, "
                       "see rtabmap_input), cuvslam (visual_slam/initial_pose, trigger on visual_slam/trigger_hint), "
                       "robot_localization (set_pose) or none (global_pose, relocalize_trigger)."),
    "rtabmap_input": ("initialpose", "With target:=rtabmap: initialpose (a relocalisation hint in localization "
                                     "mode, the default) or global_pose (a prior RTAB-Map matches by stamp)."),
    "mode": ("", "relocalization.mode: on_demand (publish the first confident fix after a ~/relocalize call or "
                 "a trigger message), continuous (every confident fix, rate-limited) or once (the first fix "
                 "after start); empty keeps the config file's."),
    "publish_tf": ("", "relocalization.publish_tf: true broadcasts map -> odom on /tf for stacks without a "
                       "localiser of their own (only with target:=none); empty keeps the config file's."),
    "pose_topic": ("", "Publish the pose on this topic instead of the target's (e.g. a robot_localization "
                       "pose0 input); empty uses the target's."),
    "trigger_topic": ("", "Listen for trigger messages (PoseWithCovarianceStamped) on this topic instead of the "
                          "target's; empty uses the target's."),
}


def _bool_or_empty(name: str, value: str) -> bool | None:
    text = value.strip().lower()
    if not text:
        return None
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"launch argument {name}:={value!r} must be true or false")


def relocalization_launch_config(args: Mapping[str, str]) -> NodeLaunchConfig:
    """Launch argument values (strings) -> NodeLaunchConfig of one loop_closure_node that relocalises.

    Missing keys take their defaults. Raises ValueError naming an unknown argument, a malformed value,
    a missing ``map_load`` (nothing to relocalise in) or ``publish_tf:=true`` with a target that
    broadcasts map -> odom itself.
    """
    known = set(SHARED_ARGUMENTS) | set(RELOCALIZATION_ARGUMENTS)
    unknown = sorted(set(args) - known)
    if unknown:
        raise ValueError(f"unknown launch argument(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    own = {name: str(args.get(name, default)).strip() for name, (default, _) in RELOCALIZATION_ARGUMENTS.items()}
    target_name = own["target"].lower()
    if target_name not in TARGETS:
        raise ValueError(f"launch argument target:={own['target']!r} must be one of {', '.join(TARGETS)}")
    if own["rtabmap_input"] not in RTABMAP_INPUTS:
        raise ValueError(f"launch argument rtabmap_input:={own['rtabmap_input']!r} must be one of "
                         f"{', '.join(RTABMAP_INPUTS)}")
    if own["mode"] and own["mode"] not in MODES:
        raise ValueError(f"launch argument mode:={own['mode']!r} must be one of {', '.join(MODES)}")
    shared = {name: str(args[name]) for name in SHARED_ARGUMENTS if name in args}
    if not shared.get("map_load", "").strip():
        raise ValueError("relocalization.launch.py needs map_load:=MAP (a map saved by a mapping session: "
                         "its frame becomes 'map'); docs/relocalization.md shows how to make one")
    target = TARGETS[target_name]
    publish_tf = _bool_or_empty("publish_tf", own["publish_tf"])
    if publish_tf and target.owns_map_to_odom:
        raise ValueError(f"publish_tf:=true with target:={target_name}: that consumer broadcasts map -> odom "
                         "itself, and two parents of odom on /tf break TF; use publish_tf only with target:=none")
    base = node_launch_config(shared)
    overrides = dict(base.overrides)
    if own["mode"]:
        overrides["relocalization.mode"] = own["mode"]
    if publish_tf is not None:
        overrides["relocalization.publish_tf"] = publish_tf
    pose_topic = own["pose_topic"] or (RTABMAP_INPUTS[own["rtabmap_input"]] if target_name == "rtabmap"
                                       else target.pose_topic)
    trigger_topic = own["trigger_topic"] or target.trigger_topic or TRIGGER_TOPIC
    ours = [(s, t) for s, t in ((POSE_TOPIC, pose_topic), (TRIGGER_TOPIC, trigger_topic)) if s != t]
    return dataclasses.replace(base, overrides=overrides, remappings=(*base.remappings, *ours))
