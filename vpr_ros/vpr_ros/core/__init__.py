"""ROS-free loop-closure core. The top level is the spine every stage uses (errors, config, types,
images, keyframes, index) and the stages' assembly (detector, detector_map, pipeline); each stage
lives in a subpackage named for its concern: matching, geometry, map, fleet, text, eval.

Nothing in this package may import rclpy, any *_msgs package, torch, or vpr_ros.models / nodes / cli
(checked by test_core_is_ros_free and test/test_layout.py). docs/architecture.md draws the layers.
"""
