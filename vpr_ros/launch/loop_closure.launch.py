"""Launch one vpr_ros loop_closure_node.

    ros2 launch vpr_ros loop_closure.launch.py image_topic:=/camera/image_raw odom_topic:=/odom
    ros2 launch vpr_ros loop_closure.launch.py model:=selavpr weights:=/data/SelaVPR_msls.pth \
        namespace:=robot1 map_save:=/data/maps/robot1

Argument meanings and defaults live in vpr_ros.launch_args (shared with the tests, which start the
real node with exactly what this file would pass); `ros2 launch vpr_ros loop_closure.launch.py -s`
lists them.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from vpr_ros.launch_args import EXECUTABLE, LAUNCH_ARGUMENTS, PACKAGE, node_launch_config


def _declare(name, default_value=None):
    default, description = LAUNCH_ARGUMENTS[name]
    return DeclareLaunchArgument(
        name, default_value=default if default_value is None else default_value, description=description)


def _nodes(context):
    values = {name: LaunchConfiguration(name).perform(context) for name in LAUNCH_ARGUMENTS}
    config = node_launch_config(values)
    return [Node(package=PACKAGE, executable=EXECUTABLE, name=config.name, namespace=config.namespace,
                 parameters=config.parameters, remappings=list(config.remappings), output="screen",
                 emulate_tty=True)]


def generate_launch_description():
    default_config = os.path.join(get_package_share_directory(PACKAGE), "config", "loop_closure.yaml")
    return LaunchDescription([
        _declare("model"),
        _declare("weights"),
        _declare("backend"),
        _declare("config", default_config),
        _declare("namespace"),
        _declare("robot_id"),
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
