"""A live pose graph for a robot with only odometry: loops -> pose graph -> map -> odom on /tf.

    ros2 launch vpr_ros pose_graph.launch.py image_topic:=/camera/image_raw odom_topic:=/odom
    ros2 launch vpr_ros pose_graph.launch.py loop_closure:=false namespace:=robot1 \
        loop_topics:=loop_closures,/robot2/loop_closures keyframe_topics:=keyframes,/robot2/keyframes

pose_graph_node (and, with loop_closure:=true, a loop_closure_node in the same namespace) subscribes to
keyframes, loop closures and odometry, and publishes map -> odom on /tf, optimized_path, keyframe_poses
(stored by the loop-closure node in its map) and diagnostics. Argument meanings and defaults live in
vpr_ros.launch_pose_graph and vpr_ros.launch_args (the tests start the real nodes with exactly what this
file would pass); docs/pose_graph.md says what the graph does and which frames result.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from vpr_ros.launch_args import LAUNCH_ARGUMENTS, PACKAGE
from vpr_ros.launch_pose_graph import POSE_GRAPH_ARGUMENTS, pose_graph_launch_configs


def _declare(name, default_value=None):
    default, description = {**LAUNCH_ARGUMENTS, **POSE_GRAPH_ARGUMENTS}[name]
    return DeclareLaunchArgument(
        name, default_value=default if default_value is None else default_value, description=description)


def _nodes(context):
    values = {name: LaunchConfiguration(name).perform(context) for name in [*POSE_GRAPH_ARGUMENTS, *LAUNCH_ARGUMENTS]}
    return [Node(package=PACKAGE, executable=node.executable, name=node.config.name,
                 namespace=node.config.namespace, parameters=node.config.parameters,
                 remappings=list(node.config.remappings), output="screen", emulate_tty=True)
            for node in pose_graph_launch_configs(values)]


def generate_launch_description():
    default_config = os.path.join(get_package_share_directory(PACKAGE), "config", "loop_closure.yaml")
    return LaunchDescription([
        _declare("loop_closure"),
        _declare("solver"),
        _declare("map_frame"),
        _declare("keyframe_topics"),
        _declare("loop_topics"),
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
