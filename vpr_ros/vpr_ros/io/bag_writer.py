"""Writing rosbag2 files with rosbags: LoopClosure output bags and image bags for tests and the demo.

MCAP and rosbag2 metadata version 9 (Jazzy) are the defaults; pass ``version=8`` for Humble's
``ros2 bag``. The LoopClosure definition is embedded in the bag, so readers need no vpr_ros_msgs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer, WriterError

from vpr_ros.core.errors import BagError
from vpr_ros.core.images import rgb_to_compressed, rgb_to_raw
from vpr_ros.core.types import Frame, LoopClosure
from vpr_ros.io.msgdefs import LOOP_CLOSURE_TYPE, loop_closure_fields, typestore
from vpr_ros.io.poses import matrix_to_pose

__all__ = ["STORAGES", "loop_closure_message", "write_loop_closures", "write_image_bag", "header_message",
           "camera_info_message", "POSE_WITH_COVARIANCE_STAMPED", "pose_with_covariance_stamped",
           "write_poses_with_covariance"]

POSE_WITH_COVARIANCE_STAMPED = "geometry_msgs/msg/PoseWithCovarianceStamped"

STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}


def _writer(path: Path, storage: str, version: int) -> Writer:
    if storage not in STORAGES:
        raise BagError(f"storage {storage!r} is not supported; choose one of {', '.join(STORAGES)}")
    if path.exists():
        raise BagError(f"output bag {path} already exists; remove it or choose another output folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    return Writer(path, version=version, storage_plugin=STORAGES[storage])  # type: ignore[arg-type]


def _time(stamp_ns: int) -> Any:
    t = typestore().types["builtin_interfaces/msg/Time"]
    return t(sec=int(stamp_ns // 1_000_000_000), nanosec=int(stamp_ns % 1_000_000_000))


def header_message(stamp_ns: int, frame_id: str) -> Any:
    return typestore().types["std_msgs/msg/Header"](stamp=_time(stamp_ns), frame_id=frame_id)


def camera_info_message(stamp_ns: int, frame_id: str, K: np.ndarray, D: np.ndarray, width: int, height: int,
                        distortion_model: str = "plumb_bob", R: np.ndarray | None = None,
                        P: np.ndarray | None = None) -> Any:
    """``sensor_msgs/CameraInfo`` of a camera: K (3, 3), D as the model takes it; R identity and
    P = [K | 0] unless given (an unrectified monocular camera)."""
    types = typestore().types
    K = np.asarray(K, np.float64)
    return types["sensor_msgs/msg/CameraInfo"](
        header=header_message(stamp_ns, frame_id), height=int(height), width=int(width),
        distortion_model=distortion_model, d=np.asarray(D, np.float64), k=K.reshape(9),
        r=np.asarray(np.eye(3) if R is None else R, np.float64).reshape(9),
        p=np.asarray(np.c_[K, np.zeros(3)] if P is None else P, np.float64).reshape(12), binning_x=0, binning_y=0,
        roi=types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))


def _pose(matrix: np.ndarray | None) -> Any:
    types = typestore().types
    (x, y, z), (qx, qy, qz, qw) = matrix_to_pose(matrix) if matrix is not None else ((0, 0, 0), (0, 0, 0, 1))
    return types["geometry_msgs/msg/Pose"](
        position=types["geometry_msgs/msg/Point"](x=float(x), y=float(y), z=float(z)),
        orientation=types["geometry_msgs/msg/Quaternion"](x=float(qx), y=float(qy), z=float(qz), w=float(qw)))


def loop_closure_message(lc: LoopClosure, frame_id: str = "map") -> Any:
    """The rosbags ``vpr_ros_msgs/msg/LoopClosure`` object for one :class:`LoopClosure` record."""
    types = typestore().types
    covariance = (np.asarray(lc.covariance, dtype=np.float64).reshape(36) if lc.covariance is not None
                  else np.zeros(36))
    pose_cov = types["geometry_msgs/msg/PoseWithCovariance"](
        pose=_pose(lc.relative_pose), covariance=covariance)
    return types[LOOP_CLOSURE_TYPE](
        header=header_message(lc.query_stamp_ns, frame_id), query_stamp=_time(lc.query_stamp_ns),
        match_stamp=_time(lc.match_stamp_ns), relative_pose=pose_cov, **loop_closure_fields(lc))


def write_loop_closures(path: str | Path, closures: Sequence[LoopClosure], *,
                        topic: str = "/loop_closures", frame_id: str = "map",
                        storage: str = "mcap", version: int = 9) -> Path:
    """Write LoopClosure records to a new rosbag2 directory ``path`` (one message per record).

    Each message is recorded at its query stamp. Raises :class:`BagError` if ``path`` exists.
    """
    path = Path(path)
    store = typestore()
    try:
        with _writer(path, storage, version) as writer:
            # rosbags embeds the full definition (with Header, Time, PoseWithCovariance) and its hash
            conn = writer.add_connection(topic, LOOP_CLOSURE_TYPE, typestore=store)
            for lc in sorted(closures, key=lambda c: c.query_stamp_ns):
                msg = loop_closure_message(lc, frame_id)
                writer.write(conn, int(lc.query_stamp_ns), store.serialize_cdr(msg, LOOP_CLOSURE_TYPE))
    except WriterError as exc:
        raise BagError(f"cannot write bag {path}: {exc}") from exc
    return path


def pose_with_covariance_stamped(stamp_ns: int, frame_id: str, T: np.ndarray, covariance: np.ndarray) -> Any:
    """``geometry_msgs/PoseWithCovarianceStamped``: pose T (4, 4), covariance (6, 6) row-major as given
    (the caller's convention; for ``global_pose`` ROS order x y z rot_x rot_y rot_z in ``frame_id``)."""
    types = typestore().types
    cov = np.asarray(covariance, np.float64).reshape(36)
    return types[POSE_WITH_COVARIANCE_STAMPED](
        header=header_message(stamp_ns, frame_id),
        pose=types["geometry_msgs/msg/PoseWithCovariance"](pose=_pose(T), covariance=cov))


def write_poses_with_covariance(path: str | Path, poses: Iterable[tuple[int, str, np.ndarray, np.ndarray]], *,
                                topic: str = "/global_pose", storage: str = "mcap", version: int = 9) -> Path:
    """A new rosbag2 directory ``path`` with one ``PoseWithCovarianceStamped`` per (stamp_ns, frame_id,
    T (4, 4), covariance (6, 6)), recorded at its stamp, in stamp order. Raises BagError if ``path`` exists."""
    path = Path(path)
    store = typestore()
    try:
        with _writer(path, storage, version) as writer:
            conn = writer.add_connection(topic, POSE_WITH_COVARIANCE_STAMPED, typestore=store)
            for stamp, frame_id, T, cov in sorted(poses, key=lambda p: p[0]):
                msg = pose_with_covariance_stamped(stamp, frame_id, T, cov)
                writer.write(conn, int(stamp), store.serialize_cdr(msg, POSE_WITH_COVARIANCE_STAMPED))
    except WriterError as exc:
        raise BagError(f"cannot write bag {path}: {exc}") from exc
    return path


def write_image_bag(path: str | Path, frames: Iterable[Frame], image_topic: str = "/camera/image_raw",
                    *, encoding: str = "rgb8", pose_topic: str | None = None,
                    pose_type: str = "odometry", frame_id: str = "camera", world_frame: str = "odom",
                    storage: str = "mcap", version: int = 9) -> Path:
    """Write frames as a rosbag2: ``sensor_msgs/Image`` (``encoding`` mono8 ... bgra8) or
    ``sensor_msgs/CompressedImage`` (``encoding`` "jpeg"/"png"), plus the frame poses on
    ``pose_topic`` as ``nav_msgs/Odometry`` (``pose_type="odometry"``) or ``PoseStamped`` ("pose").

    Returns ``path``. Frames without a pose write no pose message.
    """
    path = Path(path)
    store = typestore()
    types = store.types
    compressed = encoding.lower() in ("jpeg", "png")
    img_type = "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image"
    pose_msgtype = "nav_msgs/msg/Odometry" if pose_type == "odometry" else "geometry_msgs/msg/PoseStamped"
    try:
        with _writer(path, storage, version) as writer:
            img_conn = writer.add_connection(image_topic, img_type, typestore=store)
            pose_conn = (writer.add_connection(pose_topic, pose_msgtype, typestore=store)
                         if pose_topic else None)
            for frame in frames:
                header = header_message(frame.stamp_ns, frame_id)
                if compressed:
                    msg = types[img_type](header=header, format=encoding.lower(), data=np.frombuffer(
                        rgb_to_compressed(frame.image, encoding), dtype=np.uint8))
                else:
                    h, w, step, data = rgb_to_raw(frame.image, encoding)
                    msg = types[img_type](header=header, height=h, width=w, encoding=encoding.lower(),
                                          is_bigendian=0, step=step, data=np.frombuffer(data, np.uint8))
                writer.write(img_conn, frame.stamp_ns, store.serialize_cdr(msg, img_type))
                if pose_conn is not None and frame.pose is not None:
                    writer.write(pose_conn, frame.stamp_ns, store.serialize_cdr(
                        _pose_message(frame, world_frame, frame_id, pose_msgtype), pose_msgtype))
    except WriterError as exc:
        raise BagError(f"cannot write bag {path}: {exc}") from exc
    return path


def _pose_message(frame: Frame, world_frame: str, child_frame: str, msgtype: str) -> Any:
    types = typestore().types
    header = header_message(frame.stamp_ns, world_frame)
    pose = _pose(frame.pose)
    if msgtype == "geometry_msgs/msg/PoseStamped":
        return types[msgtype](header=header, pose=pose)
    vec = types["geometry_msgs/msg/Vector3"]
    return types[msgtype](
        header=header, child_frame_id=child_frame,
        pose=types["geometry_msgs/msg/PoseWithCovariance"](pose=pose, covariance=np.zeros(36)),
        twist=types["geometry_msgs/msg/TwistWithCovariance"](
            twist=types["geometry_msgs/msg/Twist"](linear=vec(x=0.0, y=0.0, z=0.0),
                                                   angular=vec(x=0.0, y=0.0, z=0.0)),
            covariance=np.zeros(36)))
