"""Launch one vpr_ros loop_closure_node per robot namespace.

    ros2 launch vpr_ros multi_robot.launch.py robots:=robot1,robot2 image_topic:=camera/image_raw

Each node runs in its robot's namespace with detector.robot_id = the namespace, so relative topics
resolve to /robot1/camera/image_raw, /robot1/loop_closures, ... With fleet:=true (the default) the
nodes merge their maps decentrally (docs/fleet.md): each indexes the others' keyframes and both robots
publish every inter-robot loop; fleet:=false keeps each map to itself. One process over one shared
map is central.launch.py.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from vpr_ros.launch_args import (EXECUTABLE, LAUNCH_ARGUMENTS, MULTI_ROBOT_ARGUMENTS, PACKAGE,
                                 multi_robot_launch_configs)

_SHARED = [name for name in LAUNCH_ARGUMENTS if name not in ("namespace", "robot_id")]


def _declare(name, default_value=None):
    default, description = {**LAUNCH_ARGUMENTS, **MULTI_ROBOT_ARGUMENTS}[name]
    return DeclareLaunchArgument(
        name, default_value=default if default_value is None else default_value, description=description)


def _nodes(context):
    values = {name: LaunchConfiguration(name).perform(context) for name in ["robots", "fleet", *_SHARED]}
    return [Node(package=PACKAGE, executable=EXECUTABLE, name=config.name, namespace=config.namespace,
                 parameters=config.parameters, remappings=list(config.remappings), output="screen",
                 emulate_tty=True)
            for config in multi_robot_launch_configs(values)]


def generate_launch_description():
    default_config = os.path.join(get_package_share_directory(PACKAGE), "config", "loop_closure.yaml")
    return LaunchDescription([
        _declare("robots"),
        _declare("fleet"),
        _declare("model"),
        _declare("weights"),
        _declare("backend"),
        _declare("config", default_config),
        _declare("image_topic"),
        _declare("image_compressed"),
        _declare("camera_info_topic"),
        _declare("depth_topic"),
        _declare("right_image_topic"),
        _declare("right_camera_info_topic"),
        _declare("odom_topic"),
        _declare("use_sim_time"),
        _declare("map_load"),
        _declare("map_save"),
        OpaqueFunction(function=_nodes),
    ])
