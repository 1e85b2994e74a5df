"""Pass a loop_closure_node's loops to RTAB-Map (rtabmap_msgs/srv/AddLink user links).

    ros2 launch vpr_ros rtabmap_bridge.launch.py rtabmap_namespace:=rtabmap

Argument meanings and defaults live in vpr_ros.launch_bridges (shared with the tests, which start the
real bridge with exactly what this file would pass); docs/backends.md says what the backend does with
our poses and covariances. `ros2 launch vpr_ros rtabmap_bridge.launch.py -s` lists the arguments.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from vpr_ros.launch_args import PACKAGE
from vpr_ros.launch_bridges import bridge_arguments, bridge_launch_config

BACKEND = "rtabmap"
ARGUMENTS = bridge_arguments(BACKEND)


def _declare(name):
    default, description = ARGUMENTS[name]
    return DeclareLaunchArgument(name, default_value=default, description=description)


def _nodes(context):
    values = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    config = bridge_launch_config(BACKEND, values)
    return [Node(package=PACKAGE, executable=config.name, name=config.name, namespace=config.namespace,
                 parameters=config.parameters, remappings=list(config.remappings), output="screen",
                 emulate_tty=True)]


def generate_launch_description():
    return LaunchDescription([*(_declare(name) for name in ARGUMENTS), OpaqueFunction(function=_nodes)])
