"""Input/output without ROS: rosbag2 files through rosbags, message definitions."""
