"""Messages of the live pose graph <-> the core: vpr_ros_msgs/Keyframe, LoopClosure and KeyframePoses,
nav_msgs/Path. Pure functions; each raises InputError for a message the graph cannot use."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import numpy.typing as npt
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Path
from vpr_ros_msgs.msg import Keyframe as KeyframeMsg
from vpr_ros_msgs.msg import KeyframePoses
from vpr_ros_msgs.msg import LoopClosure as LoopClosureMsg

from vpr_ros.core.errors import InputError
from vpr_ros.core.geometry.live_pose_graph_types import KeyframeKey, LoopInput
from vpr_ros.core.types import Keyframe
from vpr_ros.nodes.conversions import matrix_to_pose_msg, ns_to_stamp, pose_to_matrix, stamp_to_ns

__all__ = ["keyframe_to_msg", "keyframe_from_msg", "map_keyframe_msg",
           "map_keyframe_from_msg", "loop_from_msg",
           "keyframe_poses_msg", "keyframe_poses_from_msg", "path_msg"]

F64 = npt.NDArray[np.float64]


def keyframe_to_msg(kf: Keyframe, odom_frame: str) -> KeyframeMsg:
    """Core Keyframe -> vpr_ros_msgs/Keyframe (stamp = image time, frame_id = odometry frame)."""
    msg = KeyframeMsg(robot_id=kf.robot_id, session_id=kf.session_id, keyframe_id=int(kf.id),
                      has_pose=kf.pose is not None)
    msg.header.stamp = ns_to_stamp(kf.stamp_ns)
    if kf.pose is not None:
        msg.header.frame_id = odom_frame
        msg.pose = matrix_to_pose_msg(kf.pose)
    return msg


def keyframe_from_msg(msg: KeyframeMsg) -> tuple[KeyframeKey, int, F64 | None, str]:
    """(key, stamp_ns, odometry pose (4, 4) or None, odometry frame)."""
    key = (msg.robot_id, msg.session_id, int(msg.keyframe_id))
    pose = pose_to_matrix(msg.pose, f"keyframe {key}") if msg.has_pose else None
    return key, stamp_to_ns(msg.header.stamp), pose, msg.header.frame_id


def map_keyframe_msg(key: KeyframeKey, stamp_ns: int, T_map_base: F64, covariance: F64, map_frame: str) -> KeyframeMsg:
    """A loaded map's keyframe: its map pose (4, 4) with its ROS-order covariance (6, 6) in ``map_frame``."""
    msg = KeyframeMsg(robot_id=key[0], session_id=key[1], keyframe_id=int(key[2]), has_pose=True)
    msg.header.stamp, msg.header.frame_id = ns_to_stamp(stamp_ns), map_frame
    msg.pose = matrix_to_pose_msg(T_map_base)
    msg.pose_covariance = np.asarray(covariance, np.float64).reshape(36).tolist()
    return msg


def map_keyframe_from_msg(msg: KeyframeMsg) -> tuple[KeyframeKey, int, F64, F64 | None, str]:
    """(key, stamp_ns, map pose (4, 4), covariance (6, 6) or None when all zero, frame)."""
    key = (msg.robot_id, msg.session_id, int(msg.keyframe_id))
    if not msg.has_pose:
        raise InputError(f"map keyframe {key} has no pose (has_pose false): a map keyframe needs its map pose")
    pose = pose_to_matrix(msg.pose, f"map keyframe {key}")
    cov = np.asarray(msg.pose_covariance, np.float64).reshape(6, 6)
    if not np.all(np.isfinite(cov)):
        raise InputError(f"map keyframe {key}: the covariance contains NaN or inf")
    return key, stamp_to_ns(msg.header.stamp), pose, cov if cov.any() else None, msg.header.frame_id


def loop_from_msg(msg: LoopClosureMsg) -> LoopInput:
    """vpr_ros_msgs/LoopClosure -> LoopInput (the measured pose only when relative_pose_valid)."""
    query = (msg.query_robot_id, msg.query_session_id, int(msg.query_keyframe_id))
    match = (msg.match_robot_id, msg.match_session_id, int(msg.match_keyframe_id))
    if not msg.relative_pose_valid:
        return LoopInput(query, match)
    what = f"loop {match}->{query}"
    rel = pose_to_matrix(msg.relative_pose.pose, what)
    cov = np.asarray(msg.relative_pose.covariance, np.float64).reshape(6, 6)
    if not np.all(np.isfinite(cov)):
        raise InputError(f"{what}: the covariance contains NaN or inf")
    # An all-zero covariance says nothing: the graph then uses its "same place" covariance.
    return LoopInput(query, match, rel, cov if cov.any() else None, bool(msg.translation_scale_known))


def keyframe_poses_msg(keys: Sequence[KeyframeKey], poses: F64, covariances: F64 | None, frame_id: str,
                       stamp_ns: int, anchor: tuple[str, str]) -> KeyframePoses:
    """Optimised poses (N, 4, 4) T_map_base with (N, 6, 6) ROS-order map-frame covariances (or None)."""
    msg = KeyframePoses(anchor_robot_id=anchor[0], anchor_session_id=anchor[1])
    msg.header.stamp, msg.header.frame_id = ns_to_stamp(stamp_ns), frame_id
    msg.robot_ids = [k[0] for k in keys]
    msg.session_ids = [k[1] for k in keys]
    msg.keyframe_ids = [int(k[2]) for k in keys]
    msg.poses = [matrix_to_pose_msg(T) for T in poses]
    if covariances is not None:
        msg.covariances = np.asarray(covariances, np.float64).reshape(-1).tolist()
    return msg


def keyframe_poses_from_msg(msg: KeyframePoses) -> dict[KeyframeKey, tuple[F64, F64 | None]]:
    """KeyframePoses -> {key: (T_map_base, covariance (6, 6) or None)}; InputError for ragged arrays."""
    n = len(msg.keyframe_ids)
    same = len(msg.robot_ids) == len(msg.session_ids) == len(msg.poses) == n
    if not same or len(msg.covariances) not in (0, 36 * n):
        raise InputError(f"keyframe_poses: arrays of different lengths ({len(msg.robot_ids)} robot ids, "
                         f"{len(msg.session_ids)} session ids, {n} keyframe ids, {len(msg.poses)} poses, "
                         f"{len(msg.covariances)} covariance values; 36 per keyframe or none)")
    covs = np.asarray(msg.covariances, np.float64).reshape(n, 6, 6) if len(msg.covariances) else [None] * n
    return {(r, s, int(k)): (pose_to_matrix(p, f"keyframe ({r}, {s}, {k})"), c)
            for r, s, k, p, c in zip(msg.robot_ids, msg.session_ids, msg.keyframe_ids, msg.poses, covs)}


def path_msg(poses: F64, stamps_ns: Sequence[int], frame_id: str, stamp_ns: int) -> Path:
    """nav_msgs/Path of (N, 4, 4) poses in ``frame_id``, each stamped with its keyframe's time."""
    msg = Path()
    msg.header.stamp, msg.header.frame_id = ns_to_stamp(stamp_ns), frame_id
    for T, stamp in zip(poses, stamps_ns):
        ps = PoseStamped(pose=matrix_to_pose_msg(T))
        ps.header.stamp, ps.header.frame_id = ns_to_stamp(stamp), frame_id
        msg.poses.append(ps)
    return msg
