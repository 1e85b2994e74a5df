"""Conversions between ROS messages and the core's arrays and dataclasses.

Decoding itself lives in :mod:`vpr_ros.core.images` (shared with the bag reader); this module only
unpacks message fields. Every function raises :class:`vpr_ros.core.errors.InputError` for input the
core cannot use, so the node counts and drops that frame instead of crashing.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import numpy.typing as npt
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Pose, Transform
from nav_msgs.msg import Odometry
from sensor_msgs.msg import CompressedImage, Image
from vpr_ros_msgs.msg import LoopClosure as LoopClosureMsg

from vpr_ros.core.errors import InputError
from vpr_ros.core.images import (DEFAULT_MAX_PIXELS, SUPPORTED_ENCODINGS, SUPPORTED_FORMATS,
                                 image_from_compressed, image_from_raw, rgb_to_raw)
from vpr_ros.core.types import LoopClosure
from vpr_ros.io.msgdefs import loop_closure_fields
from vpr_ros.io.poses import matrix_to_pose, pose_matrix

__all__ = ["stamp_to_ns", "ns_to_stamp", "image_msg_to_rgb", "compressed_msg_to_rgb",
           "classify_bad_image", "pose_to_matrix", "matrix_to_pose_msg", "matrix_to_transform_msg", "odometry_to_pose", "loop_closure_to_msg", "rgb_to_image_msg", "render_debug_image"]

NS = 1_000_000_000
U8Image = npt.NDArray[np.uint8]


def stamp_to_ns(stamp: Time) -> int:
    """builtin_interfaces/Time -> integer nanoseconds."""
    return int(stamp.sec) * NS + int(stamp.nanosec)


def ns_to_stamp(ns: int) -> Time:
    """Integer nanoseconds (>= 0) -> builtin_interfaces/Time."""
    sec, nanosec = divmod(int(ns), NS)
    return Time(sec=sec, nanosec=nanosec)


def image_msg_to_rgb(msg: Image, max_pixels: int = DEFAULT_MAX_PIXELS) -> U8Image:
    """sensor_msgs/Image -> (H, W, 3) uint8 RGB (copy-free for rgb8 until the core copies)."""
    # memoryview avoids numpy iterating over rclpy's array.array element by element.
    return image_from_raw(msg.encoding, msg.height, msg.width, msg.step, memoryview(msg.data),
                          bool(msg.is_bigendian), max_pixels=max_pixels)


def compressed_msg_to_rgb(msg: CompressedImage, max_pixels: int = DEFAULT_MAX_PIXELS) -> U8Image:
    """sensor_msgs/CompressedImage (jpeg/png) -> (H, W, 3) uint8 RGB; refuses > max_pixels before decoding."""
    return image_from_compressed(msg.format, memoryview(msg.data), max_pixels=max_pixels)


def classify_bad_image(msg: Image | CompressedImage) -> str:
    """Diagnostics kind of an image message the decoder rejected (see ``nodes.stats.BAD_INPUT_KINDS``)."""
    if len(msg.data) == 0 or (isinstance(msg, Image) and (msg.height == 0 or msg.width == 0)):
        return "empty_image"
    if isinstance(msg, Image):
        return "malformed_image" if msg.encoding.lower() in SUPPORTED_ENCODINGS else "unknown_encoding"
    fmt = msg.format.lower()
    known = not fmt.strip() or any(f in fmt for f in (*SUPPORTED_FORMATS, "jpg"))
    return "corrupt_compressed" if known and "compresseddepth" not in fmt else "unknown_encoding"


def pose_to_matrix(pose: Pose, what: str, hint: str = "") -> npt.NDArray[np.float64]:
    """geometry_msgs/Pose -> (4, 4) float64; InputError naming ``what`` (and ``hint``, what to check) for
    NaN/inf or a zero quaternion."""
    p, q = pose.position, pose.orientation
    values = (p.x, p.y, p.z, q.x, q.y, q.z, q.w)
    if not all(math.isfinite(v) for v in values):
        raise InputError(f"{what}: the pose contains NaN or inf {values}{hint}")
    try:
        return pose_matrix((p.x, p.y, p.z), (q.x, q.y, q.z, q.w))
    except ValueError as exc:
        raise InputError(f"{what}: the orientation is not a rotation ({exc})") from None


def matrix_to_pose_msg(T: npt.ArrayLike) -> Pose:
    """(4, 4) rigid transform -> geometry_msgs/Pose (quaternion with qw >= 0, ``io.poses.matrix_to_pose``)."""
    (x, y, z), (qx, qy, qz, qw) = matrix_to_pose(np.asarray(T, np.float64))
    msg = Pose()
    msg.position.x, msg.position.y, msg.position.z = x, y, z
    msg.orientation.x, msg.orientation.y, msg.orientation.z, msg.orientation.w = qx, qy, qz, qw
    return msg


def matrix_to_transform_msg(T: npt.ArrayLike) -> Transform:
    """(4, 4) rigid transform -> geometry_msgs/Transform (quaternion with qw >= 0)."""
    (x, y, z), (qx, qy, qz, qw) = matrix_to_pose(np.asarray(T, np.float64))
    msg = Transform()
    msg.translation.x, msg.translation.y, msg.translation.z = x, y, z
    msg.rotation.x, msg.rotation.y, msg.rotation.z, msg.rotation.w = qx, qy, qz, qw
    return msg


def odometry_to_pose(msg: Odometry) -> npt.NDArray[np.float64]:
    """nav_msgs/Odometry -> (4, 4) float64 world_T_body; InputError for NaN/inf or a zero quaternion."""
    return pose_to_matrix(msg.pose.pose, "odometry", "; the odometry source is diverging")


def loop_closure_to_msg(loop: LoopClosure, frame_id: str) -> LoopClosureMsg:
    """Core LoopClosure -> vpr_ros_msgs/LoopClosure (header stamp = query image stamp)."""
    msg = LoopClosureMsg()
    msg.header.stamp = ns_to_stamp(loop.query_stamp_ns)
    msg.header.frame_id = frame_id
    for name, value in loop_closure_fields(loop).items():
        setattr(msg, name, value)
    msg.query_stamp = ns_to_stamp(loop.query_stamp_ns)
    msg.match_stamp = ns_to_stamp(loop.match_stamp_ns)
    if loop.relative_pose is not None:
        msg.relative_pose.pose = matrix_to_pose_msg(loop.relative_pose)
        if loop.covariance is not None:
            msg.relative_pose.covariance = [float(v) for v in np.asarray(loop.covariance).reshape(36)]
    return msg


def rgb_to_image_msg(image: U8Image, stamp_ns: int, frame_id: str = "") -> Image:
    """(H, W, 3) uint8 RGB -> sensor_msgs/Image rgb8."""
    height, width, step, data = rgb_to_raw(image, "rgb8")
    msg = Image(height=height, width=width, encoding="rgb8", is_bigendian=0, step=step)
    msg.header.stamp = ns_to_stamp(stamp_ns)
    msg.header.frame_id = frame_id
    msg.data = data
    return msg


def _grid_centres(flat_idx: npt.NDArray[np.int64], grid: tuple[int, int], size: tuple[int, int],
                  ) -> npt.NDArray[np.int32]:
    """Flat grid indices on an (h, w) grid -> (M, 2) pixel (x, y) of the cell centres in (H, W)."""
    gh, gw = grid
    height, width = size
    rows, cols = np.divmod(flat_idx, gw)
    return np.stack([(cols + 0.5) * width / gw, (rows + 0.5) * height / gh], axis=1).astype(np.int32)


def render_debug_image(query: U8Image, match: U8Image | None, pairs: tuple[np.ndarray, np.ndarray] | None,
                       grid0: tuple[int, int] | None, grid1: tuple[int, int] | None, text: str,
                       max_lines: int = 200) -> U8Image:
    """Query | match side by side with lines between MNN correspondences.

    query, match: (H, W, 3) uint8 RGB (match is resized to the query's height; None draws a grey
    panel). pairs: flat location indices (M,), (M,) on the (h, w) local grids grid0/grid1, as
    :func:`vpr_ros.core.matching.verification.mnn_pairs` returns them. Returns (H, 2W', 3) uint8 RGB.
    """
    height, width = query.shape[:2]
    if match is None:
        right = np.full_like(query, 96)
    else:
        scale = height / match.shape[0]
        right = cv2.resize(match, (max(1, round(match.shape[1] * scale)), height))
    canvas = np.ascontiguousarray(np.concatenate([query, right], axis=1))
    if pairs is not None and grid0 is not None and grid1 is not None and len(pairs[0]):
        step = max(1, len(pairs[0]) // max_lines)
        p0 = _grid_centres(np.asarray(pairs[0][::step]), grid0, (height, width))
        p1 = _grid_centres(np.asarray(pairs[1][::step]), grid1, right.shape[:2]) + [width, 0]
        for i, (a, b) in enumerate(zip(p0, p1)):
            hue = int(180 * i / max(1, len(p0)))
            colour = cv2.cvtColor(np.uint8([[[hue, 255, 255]]]), cv2.COLOR_HSV2RGB)[0, 0].tolist()
            cv2.line(canvas, tuple(int(v) for v in a), tuple(int(v) for v in b), colour, 1, cv2.LINE_AA)
    cv2.putText(canvas, text, (4, max(12, height // 20)), cv2.FONT_HERSHEY_SIMPLEX,
                max(0.35, height / 800), (255, 255, 0), 1, cv2.LINE_AA)
    return canvas
