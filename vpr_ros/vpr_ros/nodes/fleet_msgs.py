"""The fleet's messages <-> the core's fleet data (nodes/fleet.py, docs/fleet.md), checked on the way in.

What comes from a peer goes through core/fleet/validation.py: a field that cannot be used raises
:class:`~vpr_ros.core.fleet.validation.Refused` (reason = the ``fleet.refused.<reason>`` counter).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from vpr_ros_msgs.msg import KeyframeDescriptors, KeyframeGeometry
from vpr_ros_msgs.msg import LoopClosure as LoopClosureMsg

from vpr_ros.core.fleet.loop_guard import LoopKeys
from vpr_ros.core.fleet.remote_keyframes import DescriptorBatch
from vpr_ros.core.fleet.validation import (MAX_BATCH, Refused, check_ids, check_loop_values, check_name,
                                           stamp_ns)
from vpr_ros.nodes import conversions as conv

__all__ = ["batch_to_msg", "msg_to_batch", "geometry_to_msg", "msg_to_geometry_fields", "check_fleet_loop"]


def batch_to_msg(batch: DescriptorBatch, stamp: Any) -> KeyframeDescriptors:
    msg = KeyframeDescriptors(robot_id=batch.robot_id, session_id=batch.session_id, descriptor_model=batch.model_id,
                              descriptor_dim=batch.dim, features_service=batch.features_service,
                              keyframe_ids=batch.ids.tolist(), encoding=batch.encoding,
                              stamps=[conv.ns_to_stamp(int(t)) for t in batch.stamps_ns])
    msg.header.stamp = stamp
    msg.descriptors = batch.descriptors
    msg.hash_encoding, msg.hashes = batch.hash_encoding, batch.hashes
    if batch.poses is not None:
        msg.poses = batch.poses.reshape(-1).tolist()
    return msg


def msg_to_batch(msg: KeyframeDescriptors) -> DescriptorBatch:
    """A received batch; raises Refused where sizes disagree or a stamp is unusable (the rest of the
    fields: remote_keyframes.check_batch)."""
    if len(msg.keyframe_ids) > MAX_BATCH or len(msg.stamps) != len(msg.keyframe_ids):
        raise Refused("malformed", f"{len(msg.keyframe_ids)} keyframe ids (1-{MAX_BATCH}) and {len(msg.stamps)} stamps")
    poses = np.asarray(msg.poses, np.float64)
    if poses.size % 16 or poses.size not in (0, 16 * len(msg.keyframe_ids)):
        raise Refused("malformed", f"{poses.size} pose values for {len(msg.keyframe_ids)} keyframes (16 each)")
    stamps = np.array([stamp_ns(s.sec, s.nanosec, "keyframe stamp") for s in msg.stamps], np.int64)
    return DescriptorBatch(msg.robot_id, msg.session_id, msg.descriptor_model, int(msg.descriptor_dim),
                           np.asarray(msg.keyframe_ids, np.uint64), stamps, bytes(msg.descriptors),
                           poses.reshape(-1, 4, 4) if poses.size else None, msg.features_service, msg.encoding,
                           bytes(msg.hashes), msg.hash_encoding)


_GEOMETRY_FIELDS = ("valid", "image_height", "image_width", "keypoints", "descriptor_type", "descriptor_size",
                    "descriptors", "points3d", "k", "d", "distortion_model", "t_body_cam", "depth_sigma_coeff")


def geometry_to_msg(fields: dict[str, Any]) -> KeyframeGeometry:
    msg = KeyframeGeometry()
    for name, value in fields.items():
        setattr(msg, name, value)
    return msg


def msg_to_geometry_fields(msg: KeyframeGeometry) -> dict[str, Any]:
    return {name: getattr(msg, name) for name in _GEOMETRY_FIELDS}


def check_fleet_loop(msg: LoopClosureMsg, model_id: str, dim: int) -> tuple[LoopKeys, LoopKeys]:
    """A fleet loop's names, ids, stamps, model and numbers; returns (query, match) keyframes."""
    for name in ("query_robot_id", "query_session_id", "match_robot_id", "match_session_id", "descriptor_model"):
        check_name(getattr(msg, name), f"loop {name}")
    if msg.descriptor_model != model_id or int(msg.descriptor_dim) != dim:
        raise Refused("model_mismatch", f"loop of model {msg.descriptor_model[:40]!r} ({msg.descriptor_dim}-d), "
                      f"this robot uses {model_id!r} ({dim}-d)")
    check_ids([msg.query_keyframe_id], "loop query keyframe")
    check_ids([msg.match_keyframe_id], "loop match keyframe")
    pose = msg.relative_pose.pose
    check_loop_values({"score": msg.score, "global_similarity": msg.global_similarity,
                       "covariance": np.asarray(msg.relative_pose.covariance, np.float64),
                       "pose": [pose.position.x, pose.position.y, pose.position.z, pose.orientation.x,
                                pose.orientation.y, pose.orientation.z, pose.orientation.w]})
    query = LoopKeys(msg.query_robot_id, msg.query_session_id, int(msg.query_keyframe_id),
                     stamp_ns(msg.query_stamp.sec, msg.query_stamp.nanosec, "loop query stamp"))
    match = LoopKeys(msg.match_robot_id, msg.match_session_id, int(msg.match_keyframe_id),
                     stamp_ns(msg.match_stamp.sec, msg.match_stamp.nanosec, "loop match stamp"))
    return query, match
