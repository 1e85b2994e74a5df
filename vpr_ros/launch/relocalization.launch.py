"""Relocalise a robot in a saved map and hand the pose to the robot's localiser.

    ros2 launch vpr_ros relocalization.launch.py map_load:=/data/maps/office target:=nav2 \
        image_topic:=/camera/image_raw camera_info_topic:=/camera/camera_info \
        depth_topic:=/camera/depth/image_rect_raw
    ros2 launch vpr_ros relocalization.launch.py map_load:=/data/maps/office target:=cuvslam
    ros2 launch vpr_ros relocalization.launch.py map_load:=/data/maps/office target:=none publish_tf:=true

One loop_closure_node with the map loaded publishes geometry_msgs/PoseWithCovarianceStamped of the
base frame in 'map', remapped to what ``target`` takes (nav2 and slam_toolbox: initialpose; rtabmap:
rtabmap/initialpose or rtabmap/global_pose; cuvslam: visual_slam/initial_pose, with our trigger on
visual_slam/trigger_hint; robot_localization: set_pose). Argument meanings and defaults live in
vpr_ros.launch_relocalization and vpr_ros.launch_args (the tests start the real node with exactly what
this file would pass); docs/relocalization.md says what each consumer does with the pose.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from vpr_ros.launch_args import EXECUTABLE, LAUNCH_ARGUMENTS, PACKAGE
from vpr_ros.launch_relocalization import (RELOCALIZATION_ARGUMENTS, SHARED_ARGUMENTS,
                                           relocalization_launch_config)


def _declare(name, default_value=None):
    default, description = {**LAUNCH_ARGUMENTS, **RELOCALIZATION_ARGUMENTS}[name]
    return DeclareLaunchArgument(
        name, default_value=default if default_value is None else default_value, description=description)


def _nodes(context):
    values = {name: LaunchConfiguration(name).perform(context)
              for name in [*RELOCALIZATION_ARGUMENTS, *SHARED_ARGUMENTS]}
    config = relocalization_launch_config(values)
    return [Node(package=PACKAGE, executable=EXECUTABLE, name=config.name, namespace=config.namespace,
                 parameters=config.parameters, remappings=list(config.remappings), output="screen",
                 emulate_tty=True)]


def generate_launch_description():
    default_config = os.path.join(get_package_share_directory(PACKAGE), "config", "loop_closure.yaml")
    return LaunchDescription([
        _declare("target"),
        _declare("rtabmap_input"),
        _declare("mode"),
        _declare("publish_tf"),
        _declare("pose_topic"),
        _declare("trigger_topic"),
        _declare("map_load"),
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
        OpaqueFunction(function=_nodes),
    ])
