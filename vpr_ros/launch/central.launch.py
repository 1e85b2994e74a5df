"""Launch one central_node serving several robot namespaces over one shared map.

    ros2 launch vpr_ros central.launch.py robots:=robot1,robot2 image_topic:=camera/image_raw

One process ingests <robot>/<image_topic> (and odometry, camera_info, ...) of every robot and
publishes <robot>/loop_closures; inter-robot loops carry both robot ids and are published for both
robots. For robots on a radio link use multi_robot.launch.py (decentralised, fleet:=true) instead.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from vpr_ros.launch_args import (CENTRAL_ARGUMENTS, CENTRAL_EXECUTABLE, LAUNCH_ARGUMENTS, PACKAGE,
                                 central_launch_config)

_SHARED = [name for name in LAUNCH_ARGUMENTS if name not in ("namespace", "robot_id")]


def _declare(name, default_value=None):
    default, description = {**LAUNCH_ARGUMENTS, **CENTRAL_ARGUMENTS}[name]
    return DeclareLaunchArgument(
        name, default_value=default if default_value is None else default_value, description=description)


def _nodes(context):
    values = {name: LaunchConfiguration(name).perform(context) for name in ["robots", *_SHARED]}
    config = central_launch_config(values)
    # No name= and no namespace=: they would rename every robot's node in the process alike.
    return [Node(package=PACKAGE, executable=CENTRAL_EXECUTABLE, arguments=config.arguments,
                 parameters=config.node.parameters, remappings=list(config.node.remappings), output="screen",
                 emulate_tty=True)]


def generate_launch_description():
    default_config = os.path.join(get_package_share_directory(PACKAGE), "config", "loop_closure.yaml")
    return LaunchDescription([
        _declare("robots"),
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
