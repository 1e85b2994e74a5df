"""vpr_ros: visual place recognition for SLAM loop closure."""

__version__ = "0.1.0"
