"""The node's geometry inputs: calibration from ``camera_info``, depth and right images synced by stamp.

The left image stays the node's clock: every left frame takes, at processing time, the depth image
and the right image whose stamps are nearest to its own within ``sync.tolerance_sec``, from small
bounded buffers (``sync.buffer_size`` messages per topic). A partner that has not arrived yet is
waited for at most ``sync.max_wait_sec`` on the processing thread (callbacks never block); a frame
whose partner is missing or unusable goes on without it, so it gets a monocular pose or none, and
the diagnostics count why (``depth_missing``, ``right_unusable``, ...).

Calibration: ``camera_info.rectified`` false (``image_raw``): K and D of each CameraInfo, and for
stereo the extrinsic from both rectification rotations R and the right P (what ``stereoRectify``
and ``camera_calibration`` publish). True (``image_rect``): P's left 3x3 without distortion and the
baseline from the right P alone. CameraInfo carries no body extrinsic, so poses are of the left
camera's optical frame (``T_body_cam`` = identity).
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Any, Callable, Generic, TypeVar

import numpy as np
import numpy.typing as npt
from rclpy.node import Node
from rclpy.qos import QoSProfile
from sensor_msgs.msg import CameraInfo, Image

from vpr_ros.core.geometry.camera import (PinholeCamera, StereoRig, camera_from_camera_info, stereo_from_camera_infos,
                                 stereo_from_projections)
from vpr_ros.core.errors import VprError
from vpr_ros.core.geometry.keyframe_geometry import depth_from_raw
from vpr_ros.nodes.conversions import image_msg_to_rgb, stamp_to_ns
from vpr_ros.nodes.settings import NodeSettings

__all__ = ["GeometryInputs", "StampBuffer", "camera_from_msg", "stereo_rig_from_msgs", "GEOMETRY_INPUT_COUNTERS"]

#: Diagnostics counters of the geometry inputs (all start at 0).
GEOMETRY_INPUT_COUNTERS = ("camera_info_unusable", "camera_info_missing", "depth_received", "depth_missing",
                           "depth_unusable", "right_image_received", "right_camera_info_received",
                           "right_missing", "right_unusable")

T = TypeVar("T")


class StampBuffer(Generic[T]):
    """The last ``size`` items of one topic, looked up by stamp (not thread-safe; callers lock)."""

    def __init__(self, size: int) -> None:
        self._items: collections.deque[tuple[int, T]] = collections.deque(maxlen=size)

    def __len__(self) -> int:
        return len(self._items)

    def add(self, stamp_ns: int, item: T) -> None:
        self._items.append((stamp_ns, item))

    def take(self, stamp_ns: int, tolerance_ns: int) -> T | None:
        """The item nearest to ``stamp_ns`` within the tolerance, removed with everything older
        (left frames arrive in stamp order, so older partners can never match again)."""
        if not self._items:
            return None
        best = min(range(len(self._items)), key=lambda i: abs(self._items[i][0] - stamp_ns))
        stamp, item = self._items[best]
        if abs(stamp - stamp_ns) > tolerance_ns:
            return None
        for _ in range(best + 1):
            self._items.popleft()
        return item


def camera_from_msg(msg: CameraInfo, rectified: bool) -> PinholeCamera:
    """sensor_msgs/CameraInfo -> PinholeCamera; ConfigError for an uncalibrated (all-zero K) message."""
    return camera_from_camera_info(list(msg.k), list(msg.d), int(msg.width), int(msg.height),
                                   msg.distortion_model, list(msg.p), rectified=rectified)


def stereo_rig_from_msgs(left: PinholeCamera, left_msg: CameraInfo, right: PinholeCamera, right_msg: CameraInfo,
                         rectified: bool) -> StereoRig:
    """The stereo rig of a left/right CameraInfo pair (see the module docstring for ``rectified``).

    Raw images: both cameras rotate by their R into a common rectified frame in which the right
    camera sits at (-P[0,3]/P[0,0], -P[1,3]/P[1,1], 0), so T_left_right = [R1^T R2 | R1^T b].
    """
    stereo_from_camera_infos(left, list(right_msg.p))  # validates the baseline's sign
    return stereo_from_projections(left, right, list(right_msg.p), list(left_msg.p),
                                   None if rectified else list(left_msg.r),
                                   None if rectified else list(right_msg.r))


class GeometryInputs:
    """Subscribes to the geometry topics the settings enable and hands each left frame its inputs.

    count: the node's counter (``NodeStats.count``); warn: ``(key, text)`` throttled warning.
    """

    def __init__(self, settings: NodeSettings, count: Callable[[str], None],
                 warn: Callable[[str, str], None]) -> None:
        self.settings = settings
        self._count = count
        self._warn = warn
        self._cond = threading.Condition()
        self._depth: StampBuffer[Image] = StampBuffer(settings.sync_buffer_size)
        self._right: StampBuffer[Image] = StampBuffer(settings.sync_buffer_size)
        self._left_info: tuple[Any, PinholeCamera | None, CameraInfo] | None = None
        self._right_info: tuple[Any, PinholeCamera | None, CameraInfo] | None = None
        self._rig: StereoRig | None = None
        self.camera_size: tuple[int, int] | None = None  # (H, W) the last camera_info announced

    def subscribe(self, node: Node, qos: QoSProfile) -> None:
        s = self.settings
        if s.camera_info_enabled:
            node.create_subscription(CameraInfo, "camera_info", self.on_camera_info, qos)
        if s.depth_enabled:
            node.create_subscription(Image, "depth", self.on_depth, qos)
        if s.stereo_enabled:
            node.create_subscription(Image, "right/image", self.on_right_image, qos)
            node.create_subscription(CameraInfo, "right/camera_info", self.on_right_camera_info, qos)

    # -- callbacks (never block beyond a short lock) ----------------------------------------------
    def on_camera_info(self, msg: CameraInfo) -> None:
        self._count("camera_info_received")
        self.camera_size = (int(msg.height), int(msg.width))
        with self._cond:
            info = self._calibrated(msg, self._left_info)
            if info is not self._left_info:
                self._left_info, self._rig = info, None

    def on_right_camera_info(self, msg: CameraInfo) -> None:
        self._count("right_camera_info_received")
        with self._cond:
            info = self._calibrated(msg, self._right_info)
            if info is not self._right_info:
                self._right_info, self._rig = info, None

    def on_depth(self, msg: Image) -> None:
        self._count("depth_received")
        self._buffer(self._depth, msg)

    def on_right_image(self, msg: Image) -> None:
        self._count("right_image_received")
        self._buffer(self._right, msg)

    def _buffer(self, buffer: StampBuffer[Image], msg: Image) -> None:
        with self._cond:
            buffer.add(stamp_to_ns(msg.header.stamp), msg)
            self._cond.notify_all()

    def _calibrated(self, msg: CameraInfo, previous: tuple[Any, PinholeCamera | None, CameraInfo] | None,
                    ) -> tuple[Any, PinholeCamera | None, CameraInfo]:
        # Drivers repeat the same CameraInfo with every image: rebuild only when it changes.
        key = (tuple(msg.k), tuple(msg.d), tuple(msg.r), tuple(msg.p), msg.width, msg.height, msg.distortion_model)
        if previous is not None and previous[0] == key:
            return previous
        try:
            camera: PinholeCamera | None = camera_from_msg(msg, self.settings.camera_info_rectified)
        except VprError as exc:
            camera = None
            self._warn("camera_info", f"camera_info unusable, no relative poses until it is fixed: {exc}")
        return key, camera, msg

    # -- processing thread ---------------------------------------------------------------------------
    def frame_inputs(self, stamp_ns: int, image_hw: tuple[int, int]) -> dict[str, Any]:
        """Frame keyword arguments (camera, depth, right, stereo) for the left image at ``stamp_ns``."""
        s = self.settings
        if not s.camera_info_enabled:
            return {}
        tolerance = int(round(s.sync_tolerance_sec * 1e9))
        deadline = time.monotonic() + s.sync_max_wait_sec
        with self._cond:
            depth = self._wait_take(self._depth, stamp_ns, tolerance, deadline) if s.depth_enabled else None
            right = self._wait_take(self._right, stamp_ns, tolerance, deadline) if s.stereo_enabled else None
            camera = self._left_info[1] if self._left_info else None
            rig = self._stereo_rig() if s.stereo_enabled else None
        if camera is None:
            self._count("camera_info_unusable" if self._left_info else "camera_info_missing")
            return {}
        out: dict[str, Any] = {"camera": camera}
        if s.depth_enabled:
            out["depth"] = self._depth_array(depth, image_hw)
        if s.stereo_enabled:
            out["right"] = self._right_array(right, rig)
            out["stereo"] = rig if out["right"] is not None else None
        return out

    def _wait_take(self, buffer: StampBuffer[Image], stamp_ns: int, tolerance: int,
                   deadline: float) -> Image | None:
        while True:
            item = buffer.take(stamp_ns, tolerance)
            remaining = deadline - time.monotonic()
            if item is not None or remaining <= 0:
                return item
            self._cond.wait(remaining)

    def _stereo_rig(self) -> StereoRig | None:
        left, right = self._left_info, self._right_info
        if self._rig is None and left and right and left[1] and right[1]:
            try:
                self._rig = stereo_rig_from_msgs(left[1], left[2], right[1], right[2],
                                                 self.settings.camera_info_rectified)
            except VprError as exc:
                self._warn("right_camera_info", f"right camera_info unusable for stereo: {exc}")
        return self._rig

    def _depth_array(self, msg: Image | None, image_hw: tuple[int, int]) -> npt.NDArray[np.generic] | None:
        if msg is None:
            self._count("depth_missing")
            return None
        try:
            depth = depth_from_raw(msg.encoding, msg.height, msg.width, msg.step, memoryview(msg.data),
                                   bool(msg.is_bigendian))
            if depth.shape != image_hw:
                raise VprError(f"depth is {depth.shape[1]}x{depth.shape[0]}, the image "
                               f"{image_hw[1]}x{image_hw[0]}; publish depth aligned to the image")
        except VprError as exc:
            self._count("depth_unusable")
            self._warn("depth", f"depth image unusable, frame goes on without it: {exc}")
            return None
        return depth

    def _right_array(self, msg: Image | None, rig: StereoRig | None) -> npt.NDArray[np.uint8] | None:
        if msg is None:
            self._count("right_missing")
            return None
        try:
            if rig is None:
                raise VprError("no usable right/camera_info (and camera_info) yet")
            right = image_msg_to_rgb(msg, self.settings.image_max_pixels)
            if right.shape[:2] != (rig.right.height, rig.right.width):
                raise VprError(f"right image is {right.shape[1]}x{right.shape[0]}, right/camera_info says "
                               f"{rig.right.width}x{rig.right.height}")
        except VprError as exc:
            self._count("right_unusable")
            self._warn("right_image", f"right image unusable, frame goes on without it: {exc}")
            return None
        return right
