"""The node's frames: where the camera sits on the robot, and the map -> odom transform on /tf.

**Camera on the robot** (:class:`CameraMount`): T_base_camera, the camera's optical frame (the
images' ``header.frame_id``) in ``frames.base_frame``. Where ``tf2_ros`` is importable (a ROS install
always has it) it is looked up in TF (``base_frame`` <- the image's frame, waiting up to
``wait_sec`` the first time, e.g. for robot_state_publisher's /tf_static); without tf2_ros, for
images without a frame_id, or when TF has no such transform, ``frames.base_from_camera`` is used and
the log says why. The answer is kept per camera frame for the node's life (a camera does not move on
the robot), so every keyframe of one camera has the same body frame. :class:`BaseFrameInputs` gives
each frame's camera that pose (``T_body_cam``), so relative poses of loops and of relocalisation are
poses of the base frame, as odometry's are.

**map -> odom** (:class:`MapOdomBroadcaster`, ``relocalization.publish_tf``): each fix's T_map_odom
is broadcast on /tf with the image's stamp and then re-sent every ``tf.republish_sec`` stamped that
far ahead (as AMCL does with its transform tolerance), so TF lookups between fixes succeed. It uses
``tf2_ros.TransformBroadcaster`` where tf2_ros is importable, else a plain ``tf2_msgs/TFMessage``
publisher on /tf (what the broadcaster does); without tf2_msgs at all publish_tf is refused with a
logged error and the node keeps running.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any, Callable

import numpy as np
import numpy.typing as npt
from geometry_msgs.msg import Transform, TransformStamped
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.time import Time

from vpr_ros.core.config import FramesConfig
from vpr_ros.core.localization.map_pose import base_from_camera_matrix
from vpr_ros.io.poses import matrix_to_pose, pose_matrix
from vpr_ros.nodes.conversions import matrix_to_transform_msg, ns_to_stamp
from vpr_ros.nodes.geometry_inputs import GeometryInputs

try:  # a ROS install has both; on PyPI-only machines neither exists (tests build a tf2_msgs stand-in)
    import tf2_ros
except ImportError:
    tf2_ros = None
try:
    from tf2_msgs.msg import TFMessage
except ImportError:
    TFMessage = None

__all__ = ["CameraMount", "tf_lookup", "BaseFrameInputs", "MapOdomBroadcaster", "transform_to_matrix",
           "matrix_to_transform", "TF_QOS"]

F64 = npt.NDArray[np.float64]
#: /tf as tf2_ros's TransformBroadcaster publishes it: reliable, volatile, depth 100.
TF_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE)


def transform_to_matrix(t: Transform) -> F64:
    """geometry_msgs/Transform -> (4, 4) float64."""
    r, q = t.translation, t.rotation
    return pose_matrix((r.x, r.y, r.z), (q.x, q.y, q.z, q.w))


def matrix_to_transform(T: npt.ArrayLike, parent: str, child: str, stamp_ns: int) -> TransformStamped:
    """(4, 4) T_parent_child -> geometry_msgs/TransformStamped (header parent, child_frame_id child)."""
    msg = TransformStamped(child_frame_id=child, transform=matrix_to_transform_msg(T))
    msg.header.stamp = ns_to_stamp(stamp_ns)
    msg.header.frame_id = parent
    return msg


Lookup = Callable[[str, str, float], F64]


def tf_lookup(node: Node) -> Lookup | None:
    """``lookup(base_frame, camera_frame, wait_sec) -> T_base_camera`` through a tf2_ros listener on
    ``node``; None where tf2_ros is not importable."""
    if tf2_ros is None:
        return None
    buffer = tf2_ros.Buffer()
    listener = tf2_ros.TransformListener(buffer, node)

    def lookup(base: str, camera: str, wait_sec: float, _keep: Any = listener) -> F64:
        t = buffer.lookup_transform(base, camera, Time(), timeout=Duration(seconds=wait_sec))
        return transform_to_matrix(t.transform)
    return lookup


class CameraMount:
    """T_base_camera per camera frame: from ``lookup`` (:func:`tf_lookup`: TF) when there is one, else
    ``frames.base_from_camera``. ``lookup`` raises to say it has no such transform. ``info`` and
    ``warn(key, text)`` are the node's logging (the warning throttled)."""

    def __init__(self, frames: FramesConfig, lookup: Lookup | None, info: Callable[[str], Any],
                 warn: Callable[[str, str], None], wait_sec: float = 1.0) -> None:
        self.base_frame = frames.base_frame
        self.parameter = base_from_camera_matrix(frames)
        self._lookup, self._info, self._warn, self._wait = lookup, info, warn, wait_sec
        self._camera_frame = ""
        self._known: dict[str, tuple[F64, str]] = {}
        self._lock = threading.Lock()  # stage 1 (BaseFrameInputs) and stage 2 (relocalisation) ask
        self.source = "tf (no image yet)" if lookup is not None else "parameter"

    def saw_image(self, frame_id: str) -> None:
        """The image callback's ``header.frame_id`` (the camera's optical frame)."""
        self._camera_frame = frame_id

    @property
    def camera_frame(self) -> str:
        return self._camera_frame

    def base_from_camera(self) -> F64:
        """T_base_camera of the newest image's frame (decided once per frame; processing thread)."""
        frame = self._camera_frame
        with self._lock:
            if frame not in self._known:
                self._known[frame] = self._decide(frame)
            T, self.source = self._known[frame]
        return T

    def _decide(self, frame: str) -> tuple[F64, str]:
        position, quaternion = matrix_to_pose(self.parameter)
        values = " ".join(f"{v:.6g}" for v in (*position, *quaternion))
        if self._lookup is None:
            self._info(f"tf2_ros is not importable: the camera's pose on the robot is frames.base_from_camera "
                           f"({values})")
            return self.parameter, "parameter"
        if not frame:
            self._warn("camera_frame", "images carry no header.frame_id, so TF cannot give the camera's pose on the "
                                       f"robot: using frames.base_from_camera ({values})")
            return self.parameter, "parameter"
        try:
            T = np.asarray(self._lookup(self.base_frame, frame, self._wait), np.float64)
        except Exception as exc:  # noqa: BLE001 - tf2's exceptions (LookupException, ...) differ by distro
            self._warn("camera_tf", f"TF has no transform {self.base_frame} <- {frame} ({type(exc).__name__}: {exc}); "
                                    f"using frames.base_from_camera ({values}). Publish the robot's URDF "
                                    "(robot_state_publisher) or a static transform, or set frames.base_from_camera")
            return self.parameter, "parameter"
        self._info(f"camera {frame} on the robot from TF: T_{self.base_frame}_{frame} translation "
                       f"{np.round(T[:3, 3], 3).tolist()}")
        return T, "tf"


class BaseFrameInputs(GeometryInputs):
    """GeometryInputs whose camera sits at the mount's T_base_camera (``T_body_cam``): the body of every
    relative pose is then the robot's base frame, the frame of odometry and of the map's poses."""

    def __init__(self, *args: Any, mount: CameraMount, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._mount = mount

    def frame_inputs(self, stamp_ns: int, image_hw: tuple[int, int]) -> dict[str, Any]:
        out = super().frame_inputs(stamp_ns, image_hw)
        camera = out.get("camera")
        if camera is not None:
            T = self._mount.base_from_camera()
            if not np.array_equal(T, camera.T_body_cam):
                out["camera"] = dataclasses.replace(camera, T_body_cam=T)
        return out


class MapOdomBroadcaster:
    """map -> odom on /tf after each fix, re-sent every ``period_sec`` (see the module docstring).

    ``mode``: "off" (publish_tf false), "tf2_ros", "topic" (plain TFMessage publisher) or "unavailable".
    """

    def __init__(self, node: Node, enabled: bool, map_frame: str, odom_frame: str, period_sec: float) -> None:
        self._node = node
        self._frames = (map_frame, odom_frame)
        self._period_ns = int(round(period_sec * 1e9))
        self._lock = threading.Lock()
        self._last: F64 | None = None
        self.sent = 0
        self.mode = "off"
        if not enabled:
            return
        if tf2_ros is not None:
            self._send = tf2_ros.TransformBroadcaster(node).sendTransform
            self.mode = "tf2_ros"
        elif TFMessage is not None:
            pub = node.create_publisher(TFMessage, "/tf", TF_QOS)
            self._send = lambda t: pub.publish(TFMessage(transforms=[t]))
            self.mode = "topic"
        else:
            self.mode = "unavailable"
            node.get_logger().error("relocalization.publish_tf is true but neither tf2_ros nor tf2_msgs is "
                                    "importable: map -> odom is NOT broadcast (fixes are still published on "
                                    "global_pose). Source a ROS 2 install that has tf2_ros, or set publish_tf false")
            return
        if self._period_ns > 0:
            node.create_timer(period_sec, self._republish)

    @property
    def active(self) -> bool:
        return self.mode in ("tf2_ros", "topic")

    def fix(self, T_map_odom: F64, stamp_ns: int) -> None:
        """Broadcast a new map -> odom at the fix's image stamp (processing thread)."""
        if not self.active:
            return
        with self._lock:
            self._last = np.asarray(T_map_odom, np.float64)
        self._broadcast(self._last, stamp_ns)

    def _republish(self) -> None:
        with self._lock:
            last = self._last
        if last is not None:
            self._broadcast(last, self._node.get_clock().now().nanoseconds + self._period_ns)

    def _broadcast(self, T: F64, stamp_ns: int) -> None:
        self._send(matrix_to_transform(T, *self._frames, stamp_ns))
        self.sent += 1
