"""Message definitions for rosbags: ROS 2 Jazzy types plus ``vpr_ros_msgs/msg/LoopClosure``.

The LoopClosure definition is read from ``vpr_ros/data/LoopClosure.msg``, a byte-identical copy of
``vpr_ros_msgs/msg/LoopClosure.msg`` (a test checks it), so bags written without ROS and messages
published by the node share one definition.
"""

from __future__ import annotations

import functools
from importlib import resources

from typing import Any

from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from vpr_ros.core.types import LoopClosure

__all__ = ["LOOP_CLOSURE_TYPE", "loop_closure_msgdef", "loop_closure_fields", "typestore"]

LOOP_CLOSURE_TYPE = "vpr_ros_msgs/msg/LoopClosure"


def loop_closure_msgdef() -> str:
    """The text of ``LoopClosure.msg`` as shipped inside the Python package."""
    return (resources.files("vpr_ros") / "data" / "LoopClosure.msg").read_text(encoding="utf-8")


@functools.lru_cache(maxsize=1)
def typestore() -> Typestore:
    """A rosbags typestore: ROS 2 Jazzy types with ``vpr_ros_msgs/msg/LoopClosure`` registered.

    Built on first use (not at import) and shared; do not register further types into it.
    """
    store = get_typestore(Stores.ROS2_JAZZY)
    store.register(get_types_from_msg(loop_closure_msgdef(), LOOP_CLOSURE_TYPE))
    return store


def loop_closure_fields(lc: LoopClosure) -> dict[str, Any]:
    """The plain fields of ``vpr_ros_msgs/msg/LoopClosure`` for one record, by message field name.

    The one mapping from the core record to the message: the node (rclpy) and the bag writer
    (rosbags) fill these, and each sets ``header``, ``query_stamp``, ``match_stamp`` and
    ``relative_pose`` with its own library's types.
    """
    return {
        "query_keyframe_id": int(lc.query_id), "query_robot_id": lc.query_robot_id,
        "query_session_id": lc.query_session_id,
        "match_keyframe_id": int(lc.match_id), "match_robot_id": lc.match_robot_id,
        "match_session_id": lc.match_session_id,
        "global_similarity": float(lc.global_similarity), "retrieval_rank": int(lc.retrieval_rank),
        "verification_method": lc.verification_method, "local_matches": int(lc.local_matches),
        "local_features": int(lc.local_features), "geometric_inliers": int(lc.geometric_inliers),
        "score": float(lc.score), "consistent_keyframes": int(lc.consistent_keyframes),
        "relative_pose_valid": bool(lc.relative_pose_valid),
        "translation_scale_known": bool(lc.translation_scale_known),
        "geometry_method": str(lc.geometry_method), "geometry_rejection": str(lc.geometry_rejection),
        "descriptor_model": lc.descriptor_model, "descriptor_dim": int(lc.descriptor_dim),
    }
