"""Launch arguments -> node parameters and remappings, as a pure function.

``launch/loop_closure.launch.py`` and ``launch/multi_robot.launch.py`` call :func:`node_launch_config`
inside an ``OpaqueFunction``; the tests call it too and start the real node with exactly its output
(:func:`to_ros_args`), so the launch logic is tested without ``launch``/``launch_ros``.
No ROS imports here.

Empty argument values mean "not given": the parameter file (``config``) or the dataclass default
then decides, so a launch file never silently overrides the YAML.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

__all__ = ["LAUNCH_ARGUMENTS", "MULTI_ROBOT_ARGUMENTS", "CENTRAL_ARGUMENTS", "NodeLaunchConfig",
           "CentralLaunchConfig", "node_launch_config", "multi_robot_launch_configs", "central_launch_config",
           "to_ros_args"]

PACKAGE = "vpr_ros"
EXECUTABLE = "loop_closure_node"
CENTRAL_EXECUTABLE = "central_node"
NODE_NAME = "loop_closure_node"

#: name -> (default value, description); the launch files declare exactly these.
LAUNCH_ARGUMENTS: dict[str, tuple[str, str]] = {
    "model": ("", "Descriptor preset (model.preset), e.g. lite0-gem or selavpr; empty keeps the config file's."),
    "weights": ("", "Local weights file for the preset (model.weights); empty uses the packaged or cached weights."),
    "backend": ("", "Inference backend (model.backend): torch, onnxruntime or tensorrt; empty keeps the config file's."),
    "config": ("", "ROS 2 parameter file (/**: ros__parameters:) with the pipeline configuration; "
                   "the launch file defaults it to the installed config/loop_closure.yaml."),
    "namespace": ("", "Namespace of the node and its relative topics (e.g. robot1); empty for none."),
    "robot_id": ("", "Robot id written into keyframes and loop closures (detector.robot_id); "
                     "empty uses the namespace, or the config file's value without a namespace."),
    "image_topic": ("image", "Camera topic to subscribe to (sensor_msgs/Image, or CompressedImage "
                             "when image.compressed is true)."),
    "image_compressed": ("", "true: image_topic carries sensor_msgs/CompressedImage (jpeg/png, e.g. "
                             ".../image_raw/compressed), false: sensor_msgs/Image (image.compressed); "
                             "empty keeps the config file's."),
    "camera_info_topic": ("", "sensor_msgs/CameraInfo topic of the image: its calibration gives loops a measured "
                              "relative pose, and image sizes are checked against it; empty disables it."),
    "depth_topic": ("", "Depth image aligned to the image (sensor_msgs/Image 16UC1 mm or 32FC1 m, same stamps) "
                        "for metric relative poses; needs camera_info_topic; empty disables it."),
    "right_image_topic": ("", "Right image of a stereo pair (sensor_msgs/Image, same stamps as the image) for "
                              "metric relative poses; needs camera_info_topic and right_camera_info_topic; "
                              "empty disables stereo."),
    "right_camera_info_topic": ("", "sensor_msgs/CameraInfo of the right camera (baseline from its P; R for raw "
                                    "images); needed with right_image_topic."),
    "odom_topic": ("odom", "nav_msgs/Odometry topic that tags keyframes with poses; empty disables it."),
    "use_sim_time": ("false", "Use /clock (bag replay) instead of the wall clock: true or false."),
    "map_load": ("", "Map directory loaded at startup (map.load_path; several separated by commas); empty starts with an empty map."),
    "map_save": ("", "Map directory written by ~/save_map and at shutdown (map.save_path); empty: no save."),
}

#: Extra argument of multi_robot.launch.py (the per-robot arguments above are shared).
MULTI_ROBOT_ARGUMENTS: dict[str, tuple[str, str]] = {
    "robots": ("robot1,robot2", "Comma-separated robot namespaces; one loop_closure_node runs in each "
                                "and subscribes to <robot>/<image_topic> (relative topics)."),
    "fleet": ("true", "Decentralised map merging between the robots' nodes (fleet.enabled, docs/fleet.md): "
                      "each shares its keyframe descriptors, verifies inter-robot loops and both robots "
                      "publish them; false keeps every robot's map to itself."),
}

#: Extra argument of central.launch.py (the per-robot arguments above are shared).
CENTRAL_ARGUMENTS: dict[str, tuple[str, str]] = {
    "robots": ("robot1,robot2", "Comma-separated robot namespaces served by the one central_node process: "
                                "it subscribes to <robot>/<image_topic> and publishes <robot>/loop_closures "
                                "for each, over one shared map."),
}


@dataclasses.dataclass(frozen=True)
class NodeLaunchConfig:
    """What ``launch_ros.actions.Node`` needs: namespace, name, parameters and remappings.

    parameters: ``params_files`` first (in order), then ``overrides``, which win.
    """

    namespace: str
    name: str
    params_files: tuple[str, ...]
    overrides: dict[str, Any]
    remappings: tuple[tuple[str, str], ...]

    @property
    def parameters(self) -> list[Any]:
        """The ``parameters=`` list for ``launch_ros.actions.Node``."""
        return [*self.params_files, dict(self.overrides)]


def _bool(name: str, value: str) -> bool:
    text = value.strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off", ""):
        return False
    raise ValueError(f"launch argument {name}:={value!r} must be true or false")


def node_launch_config(args: Mapping[str, str]) -> NodeLaunchConfig:
    """Launch argument values (strings, as launch gives them) -> NodeLaunchConfig.

    Missing keys take their :data:`LAUNCH_ARGUMENTS` default. Raises ValueError naming an unknown
    argument or a malformed value.
    """
    unknown = sorted(set(args) - set(LAUNCH_ARGUMENTS))
    if unknown:
        raise ValueError(f"unknown launch argument(s) {', '.join(unknown)}; known: {', '.join(LAUNCH_ARGUMENTS)}")
    values = {name: str(args.get(name, default)).strip() for name, (default, _) in LAUNCH_ARGUMENTS.items()}
    namespace = values["namespace"].strip("/")
    overrides: dict[str, Any] = {"use_sim_time": _bool("use_sim_time", values["use_sim_time"])}
    for arg, param in (("model", "model.preset"), ("weights", "model.weights"),
                       ("backend", "model.backend"), ("map_load", "map.load_path"),
                       ("map_save", "map.save_path")):
        if values[arg]:
            overrides[param] = values[arg]
    if values["image_compressed"]:
        overrides["image.compressed"] = _bool("image_compressed", values["image_compressed"])
    robot_id = values["robot_id"] or namespace.replace("/", "_")
    if robot_id:
        overrides["detector.robot_id"] = robot_id
    remappings = [("image", values["image_topic"] or "image")]
    overrides["camera_info.enabled"] = bool(values["camera_info_topic"])
    if values["camera_info_topic"]:
        remappings.append(("camera_info", values["camera_info_topic"]))
    if (values["depth_topic"] or values["right_image_topic"]) and not values["camera_info_topic"]:
        raise ValueError("depth_topic and right_image_topic need camera_info_topic (the image's calibration)")
    if bool(values["right_image_topic"]) != bool(values["right_camera_info_topic"]):
        raise ValueError("right_image_topic and right_camera_info_topic go together: give both or neither")
    overrides["depth.enabled"] = bool(values["depth_topic"])
    if values["depth_topic"]:
        remappings.append(("depth", values["depth_topic"]))
    overrides["stereo.enabled"] = bool(values["right_image_topic"])
    if values["right_image_topic"]:
        remappings += [("right/image", values["right_image_topic"]),
                       ("right/camera_info", values["right_camera_info_topic"])]
    overrides["odom.enabled"] = bool(values["odom_topic"])
    if values["odom_topic"]:
        remappings.append(("odom", values["odom_topic"]))
    files = (values["config"],) if values["config"] else ()
    return NodeLaunchConfig(namespace=namespace, name=NODE_NAME, params_files=files,
                            overrides=overrides, remappings=tuple(remappings))


def multi_robot_launch_configs(args: Mapping[str, str]) -> list[NodeLaunchConfig]:
    """One NodeLaunchConfig per namespace in ``robots`` (the other arguments are shared).

    ``namespace`` and ``robot_id`` come from each robot's name; giving them is an error. A given
    ``map_save`` becomes ``<map_save>/<robot>``; ``map_load`` is shared (a prior map for everyone).
    """
    shared = dict(args)
    robots_text = shared.pop("robots", MULTI_ROBOT_ARGUMENTS["robots"][0])
    for fixed in ("namespace", "robot_id"):
        if shared.get(fixed):
            raise ValueError(f"multi_robot: {fixed} comes from 'robots'; do not set it")
        shared.pop(fixed, None)
    robots = [r.strip().strip("/") for r in robots_text.split(",") if r.strip().strip("/")]
    if not robots or len(set(robots)) != len(robots):
        raise ValueError(f"multi_robot: robots:={robots_text!r} must list distinct namespaces, e.g. robot1,robot2")
    save = str(shared.pop("map_save", "")).strip().rstrip("/")
    fleet = _bool("fleet", str(shared.pop("fleet", MULTI_ROBOT_ARGUMENTS["fleet"][0])))
    configs = []
    # One map directory per robot: two nodes writing the same directory would corrupt it.
    for robot in robots:
        config = node_launch_config({**shared, "namespace": robot, "map_save": f"{save}/{robot}" if save else ""})
        config.overrides["fleet.enabled"] = fleet
        configs.append(config)
    return configs


@dataclasses.dataclass(frozen=True)
class CentralLaunchConfig:
    """One ``central_node`` process: its ``arguments`` (the robots) and the shared node configuration
    (no namespace and no node name: each robot's node gets its namespace inside the process)."""

    robots: tuple[str, ...]
    node: NodeLaunchConfig

    @property
    def arguments(self) -> list[str]:
        """The ``arguments=`` list for ``launch_ros.actions.Node``."""
        return ["--robots", ",".join(self.robots)]

    def command_line(self) -> list[str]:
        """Arguments of ``central_node`` equivalent to launching this config with launch_ros."""
        argv = to_ros_args(self.node)
        at = argv.index(f"__node:={self.node.name}")
        del argv[at - 1:at + 1]  # no __node: it would give every robot's node in the process one name
        return [*self.arguments, *argv]


def central_launch_config(args: Mapping[str, str]) -> CentralLaunchConfig:
    """``robots`` plus the per-robot arguments (shared by every robot) -> CentralLaunchConfig.

    ``namespace`` and ``robot_id`` come from each robot's name; giving them is an error. ``map_save``
    names the one shared map (written by the first robot's node, which holds every keyframe).
    """
    shared = dict(args)
    robots_text = shared.pop("robots", CENTRAL_ARGUMENTS["robots"][0])
    for fixed in ("namespace", "robot_id"):
        if shared.get(fixed):
            raise ValueError(f"central: {fixed} comes from 'robots'; do not set it")
        shared.pop(fixed, None)
    robots = [r.strip().strip("/") for r in robots_text.split(",") if r.strip().strip("/")]
    if not robots or len(set(robots)) != len(robots):
        raise ValueError(f"central: robots:={robots_text!r} must list distinct namespaces, e.g. robot1,robot2")
    node = node_launch_config(shared)
    return CentralLaunchConfig(tuple(robots), dataclasses.replace(node, name=CENTRAL_EXECUTABLE))


def _yaml_scalar(value: Any) -> str:
    # rcl parses each -p value as YAML; quoting keeps strings like "1" or "true" strings.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


def to_ros_args(config: NodeLaunchConfig) -> list[str]:
    """The ``--ros-args ...`` command line equivalent to launching ``config`` with launch_ros."""
    argv = ["--ros-args", "-r", f"__node:={config.name}"]
    if config.namespace:
        argv += ["-r", f"__ns:=/{config.namespace}"]
    for path in config.params_files:
        argv += ["--params-file", path]
    for name, value in config.overrides.items():
        argv += ["-p", f"{name}:={_yaml_scalar(value)}"]
    for source, target in config.remappings:
        argv += ["-r", f"{source}:={target}"]
    return argv
