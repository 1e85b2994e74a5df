"""Geometry inputs of a bag replay, paired with each image by stamp: calibration, depth, right image.

:class:`GeometryInputs` says where they come from (topics of the bag or calibration files);
:class:`FrameAssembler` fills ``Frame.camera / depth / right / stereo`` of each image frame:

* calibrations (CameraInfo topics): the latest message stamped at or before the image (the first
  one for images before it); a CameraInfo stream is small, so it is read before the images;
* depth and right images: the message whose header stamp is nearest the image's, within
  ``sync_tolerance_sec``; an image waits for them until a later-stamped message of that topic
  arrives or the bag has moved on by ``WAIT_BAG_SEC``, so the replay stays a single streaming pass.

Images without a partner are replayed without it and counted (``ReadStats.frames_without_*``).
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
from typing import Any, Callable

import numpy as np
import numpy.typing as npt

from vpr_ros.core.geometry.camera import StereoRig
from vpr_ros.core.errors import BagError, ConfigError
from vpr_ros.core.geometry.keyframe_geometry import depth_from_raw
from vpr_ros.core.types import Frame
from vpr_ros.io.calibration import Calibration, calibration_from_camera_info, on_base, stereo_rig

__all__ = ["GeometryInputs", "CalibrationTrack", "SideStream", "FrameAssembler", "CAMERA_INFO_TYPE", "WAIT_BAG_SEC"]

CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
WAIT_BAG_SEC = 1.0
DEPTH_ENCODINGS = ("16uc1", "mono16", "32fc1")
MAX_BUFFERED = 256  # side messages kept per topic (a stream without images must not fill the memory)


@dataclasses.dataclass(frozen=True)
class GeometryInputs:
    """What to read with the images so that keyframes get keypoints and 3-D points (docs/replay.md).

    camera: the left calibration from a file, or camera_info_topic; depth_topic: aligned depth
    (16UC1 mm / 32FC1 m); right_image_topic with right_camera (file) or right_camera_info_topic.
    rectified: the image topics are rectified (cameras from P, no distortion).
    """

    camera_info_topic: str | None = None
    camera: Calibration | None = None
    depth_topic: str | None = None
    right_image_topic: str | None = None
    right_camera_info_topic: str | None = None
    right_camera: Calibration | None = None
    rectified: bool = False
    sync_tolerance_sec: float = 0.005
    #: (4, 4) pose of the left camera in the robot's base frame (``frames.base_from_camera``) applied to
    #: calibrations read from camera_info topics (files are moved once, by the caller); None: keep them.
    T_base_cam: npt.NDArray[np.float64] | None = None

    def __post_init__(self) -> None:
        if (self.camera is None) == (self.camera_info_topic is None):
            raise ConfigError("geometry inputs need exactly one left calibration: a camera_info topic or a file")
        if self.depth_topic and self.right_image_topic:
            raise ConfigError("give an aligned depth topic or a right image topic, not both")
        if self.right_image_topic and (self.right_camera is None) == (self.right_camera_info_topic is None):
            raise ConfigError("a right image topic needs exactly one right calibration: a camera_info topic or a file")
        if not 0 <= self.sync_tolerance_sec <= 1:
            raise ConfigError(f"sync tolerance {self.sync_tolerance_sec} s must be within 0..1 s")

    def topics(self) -> dict[str, tuple[str, ...]]:
        """topic -> the message types it may have."""
        info = (CAMERA_INFO_TYPE,)
        out: dict[str, tuple[str, ...]] = {}
        if self.camera_info_topic:
            out[self.camera_info_topic] = info
        if self.right_camera_info_topic:
            out[self.right_camera_info_topic] = info
        if self.depth_topic:
            out[self.depth_topic] = ("sensor_msgs/msg/Image",)
        if self.right_image_topic:
            out[self.right_image_topic] = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
        return out


class CalibrationTrack:
    """CameraInfo messages of one topic by stamp; equal messages share one Calibration."""

    def __init__(self, topic: str, rectified: bool) -> None:
        self.topic, self.rectified = topic, rectified
        self._stamps: list[int] = []
        self._items: list[Calibration] = []
        self._cache: dict[tuple, Calibration] = {}

    def add(self, stamp_ns: int, msg: Any) -> None:
        key = (tuple(np.asarray(msg.k).tolist()), tuple(np.asarray(msg.d).tolist()), tuple(np.asarray(msg.r).tolist()),
               tuple(np.asarray(msg.p).tolist()), int(msg.width), int(msg.height), str(msg.distortion_model))
        if key not in self._cache:
            self._cache[key] = calibration_from_camera_info(msg, self.rectified, f"camera_info on {self.topic}")
        i = bisect.bisect_right(self._stamps, stamp_ns)
        self._stamps.insert(i, stamp_ns)
        self._items.insert(i, self._cache[key])

    def __len__(self) -> int:
        return len(self._items)

    def at(self, stamp_ns: int) -> Calibration:
        i = bisect.bisect_right(self._stamps, stamp_ns)
        return self._items[max(i - 1, 0)]


class SideStream:
    """Buffered messages of one depth / right image topic, waiting for the image of their stamp."""

    def __init__(self, topic: str, tolerance_ns: int) -> None:
        self.topic, self.tolerance_ns = topic, tolerance_ns
        self.buffer: collections.deque[tuple[int, str, Any]] = collections.deque(maxlen=MAX_BUFFERED)
        self.latest_ns: int | None = None

    def add(self, stamp_ns: int, msgtype: str, msg: Any) -> None:
        self.buffer.append((stamp_ns, msgtype, msg))
        self.latest_ns = stamp_ns if self.latest_ns is None else max(self.latest_ns, stamp_ns)

    def has_passed(self, stamp_ns: int) -> bool:
        """Whether a message stamped after ``stamp_ns`` + tolerance arrived: no better partner will come."""
        return self.latest_ns is not None and self.latest_ns > stamp_ns + self.tolerance_ns

    def take(self, stamp_ns: int) -> tuple[str, Any] | None:
        """The message nearest ``stamp_ns`` within the tolerance; drops those too old for later images."""
        best = min(self.buffer, key=lambda item: abs(item[0] - stamp_ns), default=None)
        while self.buffer and self.buffer[0][0] < stamp_ns - self.tolerance_ns:
            self.buffer.popleft()
        if best is None or abs(best[0] - stamp_ns) > self.tolerance_ns:
            return None
        return best[1], best[2]


class FrameAssembler:
    """Completes image frames with the geometry inputs (see the module docstring)."""

    def __init__(self, inputs: GeometryInputs, left: CalibrationTrack | None, right: CalibrationTrack | None,
                 decode_image: Callable[[str, Any], npt.NDArray[np.uint8]], stats: Any) -> None:
        self.inputs, self.left, self.right = inputs, left, right
        self._decode_image = decode_image
        self._stats = stats
        tol = round(inputs.sync_tolerance_sec * 1e9)
        self.streams = {t: SideStream(t, tol) for t in (inputs.depth_topic, inputs.right_image_topic) if t}
        self._rigs: dict[tuple[int, int], StereoRig] = {}
        self._based: dict[tuple[int, int | None], Calibration] = {}

    def ready(self, stamp_ns: int, bag_ns: int, now_bag_ns: int | None) -> bool:
        """Whether an image (header stamp, bag time) can be completed; ``now_bag_ns`` None: the bag ended."""
        if now_bag_ns is None or now_bag_ns - bag_ns > WAIT_BAG_SEC * 1e9:
            return True
        return all(s.has_passed(stamp_ns) for s in self.streams.values())

    def _on_base(self, calibration: Calibration, left: Calibration | None = None) -> Calibration:
        """A topic's calibration moved onto the base frame, once per distinct calibration (stable ids for
        the rig cache)."""
        key = (id(calibration), None if left is None else id(left))
        if key not in self._based:
            self._based[key] = on_base(calibration, self.inputs.T_base_cam, left)
        return self._based[key]

    def complete(self, frame: Frame, where: str) -> Frame:
        left = self.inputs.camera if self.left is None else self.left.at(frame.stamp_ns)
        raw_left = left
        if self.left is not None and self.inputs.T_base_cam is not None:
            left = self._on_base(left)
        cam = left.camera
        h, w = frame.image.shape[:2]
        if (cam.width, cam.height) != (w, h):
            raise ConfigError(f"the camera calibration is for {cam.width}x{cam.height} images but {where} is "
                              f"{w}x{h}; give the calibration of the image topic")
        depth = right = rig = None
        if self.inputs.depth_topic:
            depth = self._side(self.inputs.depth_topic, frame.stamp_ns, self._decode_depth, "depth")
        if self.inputs.right_image_topic:
            right = self._side(self.inputs.right_image_topic, frame.stamp_ns, self._decode_image, "right")
            if right is not None:
                rc = self.inputs.right_camera if self.right is None else self.right.at(frame.stamp_ns)
                if self.right is not None and self.inputs.T_base_cam is not None:
                    rc = self._on_base(rc, raw_left)
                key = (id(left), id(rc))
                if key not in self._rigs:
                    self._rigs[key] = stereo_rig(left, rc, self.inputs.rectified)
                rig = self._rigs[key]
        return dataclasses.replace(frame, camera=cam, depth=depth, right=right, stereo=rig)

    def _side(self, topic: str, stamp_ns: int, decode: Callable[[str, Any], Any], what: str) -> Any:
        taken = self.streams[topic].take(stamp_ns)
        if taken is not None:
            try:
                return decode(*taken)
            except ValueError as exc:  # InputError included: a damaged message costs this frame its partner
                self._stats.note_corrupt(f"{topic} @ {stamp_ns}: {exc}")
        setattr(self._stats, f"frames_without_{what}", getattr(self._stats, f"frames_without_{what}") + 1)
        return None

    def _decode_depth(self, msgtype: str, msg: Any) -> npt.NDArray[np.generic]:
        if str(msg.encoding).lower() not in DEPTH_ENCODINGS:
            # every message of the topic would fail: say so once instead of replaying without depth
            raise BagError(f"depth topic {self.inputs.depth_topic} has encoding {msg.encoding!r}; give an aligned "
                           "depth image topic in 16UC1 (mm) or 32FC1 (m)")
        return depth_from_raw(msg.encoding, int(msg.height), int(msg.width), int(msg.step),
                              memoryview(np.ascontiguousarray(msg.data)), bool(msg.is_bigendian))
