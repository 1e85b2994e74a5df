"""Bridges from our loop closures to the SLAM backends that accept external ones (docs/backends.md):
one small node per backend (``rtabmap_bridge``, ``cslam_bridge``, ``hydra_bridge``,
``lio_sam_bridge``) on the shared node code of ``common``. They may import rclpy, the message
packages (the peer's only inside the node, import-gated by ``common.import_peer``), ``nodes``'s
conversions and parameters, ``io.poses`` and the ROS-free conversion code in
``core.geometry.backend_edges`` and ``core.geometry.backend_nodes``.
"""
