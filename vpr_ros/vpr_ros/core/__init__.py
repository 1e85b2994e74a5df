"""ROS-free loop-closure core: config, types, keyframes, index, verification, detector, map store.

Nothing in this package may import rclpy or any *_msgs package (checked by test_core_is_ros_free).
"""
