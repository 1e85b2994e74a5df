"""Kidnapped-robot sessions as rosbag2 + TUM ground truth, the way ``vpr-ros replay`` reads them.

A rendered session (``kidnapped_scenes.Session``, SIMULATED from real photographs) becomes an MCAP bag
with, per frame at one stamp: ``/camera/image_raw`` (rgb8), ``/camera/camera_info``,
``/camera/depth/image_raw`` (32FC1, metres) and ``/odom`` (``nav_msgs/Odometry``, ``odom`` ->
``base_link``); its true base poses in the map frame go to a TUM file (``--gt-poses``). The EuRoC
V1_01 stereo frames of ``test/data/kimera_euroc`` (real images) become a two-frame map bag (the
``match`` frames, odometry = their ground-truth body poses, i.e. map = the EuRoC world frame), one
single-frame kidnapped bag per ``query`` frame (odometry identity) and one of both query frames
(exact odometry between them), stereo (left + right, mono8).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
from rosbags.rosbag2 import StoragePlugin, Writer

from vpr_ros.cli.kidnapped_scenes import Session, odometry_from_start
from vpr_ros.cli.rendered_rooms import RenderCamera, rendered_view, simulated_degradation
from vpr_ros.io.bag_writer import camera_info_message, header_message
from vpr_ros.io.msgdefs import typestore
from vpr_ros.io.poses import matrix_to_pose

__all__ = ["NS", "IMAGE_TOPIC", "INFO_TOPIC", "DEPTH_TOPIC", "ODOM_TOPIC", "RIGHT_TOPIC", "write_session_bag",
           "write_tum", "write_camera_yaml", "odometry_message", "EurocStart", "euroc_bags"]

F64 = npt.NDArray[np.float64]
NS = 10**9
IMAGE_TOPIC, INFO_TOPIC, DEPTH_TOPIC = "/camera/image_raw", "/camera/camera_info", "/camera/depth/image_raw"
RIGHT_TOPIC, ODOM_TOPIC = "/camera/right/image_raw", "/odom"
FRAME_PERIOD_NS = NS  # one frame a second


def _image(stamp_ns: int, array: npt.NDArray[Any], encoding: str, frame_id: str = "camera") -> Any:
    return typestore().types["sensor_msgs/msg/Image"](
        header=header_message(stamp_ns, frame_id), height=array.shape[0], width=array.shape[1], encoding=encoding,
        is_bigendian=0, step=array.shape[1] * array.itemsize * (array.shape[2] if array.ndim == 3 else 1),
        data=np.frombuffer(np.ascontiguousarray(array).tobytes(), np.uint8))


def odometry_message(stamp_ns: int, T_odom_base: F64, odom_frame: str = "odom", base_frame: str = "base_link") -> Any:
    """``nav_msgs/Odometry`` with pose ``T_odom_base`` (zero twist and covariances)."""
    types = typestore().types
    (x, y, z), (qx, qy, qz, qw) = matrix_to_pose(T_odom_base)
    pose = types["geometry_msgs/msg/Pose"](
        position=types["geometry_msgs/msg/Point"](x=float(x), y=float(y), z=float(z)),
        orientation=types["geometry_msgs/msg/Quaternion"](x=float(qx), y=float(qy), z=float(qz), w=float(qw)))
    vec = types["geometry_msgs/msg/Vector3"]
    return types["nav_msgs/msg/Odometry"](
        header=header_message(stamp_ns, odom_frame), child_frame_id=base_frame,
        pose=types["geometry_msgs/msg/PoseWithCovariance"](pose=pose, covariance=np.zeros(36)),
        twist=types["geometry_msgs/msg/TwistWithCovariance"](
            twist=types["geometry_msgs/msg/Twist"](linear=vec(x=0.0, y=0.0, z=0.0), angular=vec(x=0.0, y=0.0, z=0.0)),
            covariance=np.zeros(36)))


def _write(path: Path, messages: list[tuple[int, str, str, Any]]) -> Path:
    """(stamp, topic, type, message) in order -> a new MCAP bag at ``path``."""
    store = typestore()
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conns: dict[str, Any] = {}
        for stamp, topic, msgtype, msg in messages:
            if topic not in conns:
                conns[topic] = writer.add_connection(topic, msgtype, typestore=store)
            writer.write(conns[topic], stamp, store.serialize_cdr(msg, msgtype))
    return path


def write_camera_yaml(path: Path, camera: RenderCamera, name: str = "camera") -> Path:
    """The rendered camera as a ROS ``camera_calibration`` YAML (``replay --camera-info FILE``, which
    ``frames.base_from_camera`` applies to)."""
    K = np.asarray(camera.K, np.float64)

    def block(rows: int, cols: int, values: Any) -> str:
        return f"  rows: {rows}\n  cols: {cols}\n  data: [{', '.join(repr(float(v)) for v in np.ravel(values))}]\n"
    path.write_text(f"image_width: {camera.width}\nimage_height: {camera.height}\ncamera_name: {name}\n"
                    f"camera_matrix:\n{block(3, 3, K)}distortion_model: plumb_bob\n"
                    f"distortion_coefficients:\n{block(1, 5, camera.D)}rectification_matrix:\n{block(3, 3, np.eye(3))}"
                    f"projection_matrix:\n{block(3, 4, np.c_[K, np.zeros(3)])}")
    return path


def write_tum(path: Path, stamps_ns: list[int], poses: list[F64], comment: str) -> Path:
    """A TUM trajectory (``t x y z qx qy qz qw``, seconds) of ``poses`` at ``stamps_ns``, after a
    ``# comment`` line."""
    lines = [f"# {comment}"]
    for stamp, T in zip(stamps_ns, poses):
        (x, y, z), q = matrix_to_pose(T)
        lines.append(f"{stamp // NS}.{stamp % NS:09d} {x:.9f} {y:.9f} {z:.9f} " + " ".join(f"{v:.12f}" for v in q))
    path.write_text("\n".join(lines) + "\n")
    return path


def write_session_bag(path: Path, session: Session, camera: RenderCamera, start_ns: int, seed: int, *,
                      exact_odometry_frame: bool = False, supersample: int = 2) -> tuple[list[int], list[F64]]:
    """Render ``session`` and write its bag (see the module docstring); returns (stamps, true T_map_base).

    ``exact_odometry_frame``: odometry = the true map poses (the mapping session, whose odom frame
    becomes the map frame); else odometry starts at identity (a kidnapped session). Views get mild
    read/shot noise and a per-frame gain of 0.85-1.15 (seeded)."""
    rng = np.random.default_rng(seed)
    truth = session.T_map_base
    odom = truth if exact_odometry_frame else odometry_from_start(truth)
    stamps = [start_ns + k * FRAME_PERIOD_NS for k in range(len(truth))]
    messages = []
    for stamp, place, T_place_cam, T_odom in zip(stamps, session.places, session.T_place_cam, odom):
        view = rendered_view(place.room, camera, T_place_cam, supersample)
        image = simulated_degradation(view.image, rng, gain=float(rng.uniform(0.85, 1.15)), read_noise=2.0,
                                      shot_noise=0.5)
        messages += [(stamp, INFO_TOPIC, "sensor_msgs/msg/CameraInfo",
                      camera_info_message(stamp, "camera", camera.K, camera.D, camera.width, camera.height)),
                     (stamp, IMAGE_TOPIC, "sensor_msgs/msg/Image", _image(stamp, image, "rgb8")),
                     (stamp, DEPTH_TOPIC, "sensor_msgs/msg/Image", _image(stamp, view.depth, "32FC1")),
                     (stamp, ODOM_TOPIC, "nav_msgs/msg/Odometry", odometry_message(stamp, T_odom))]
    _write(path, messages)
    return stamps, truth


@dataclasses.dataclass(frozen=True)
class EurocStart:
    """One EuRoC query frame as a kidnapped start: its bag, TUM truth (world_T_body) and name."""

    name: str
    bag: Path
    gt: Path


def euroc_bags(directory: Path, out: Path, start_ns: int) -> tuple[Path, list[EurocStart]]:
    """(map bag, starts) from the EuRoC V1_01 stereo frames: the map holds ``left/right_img_0`` and
    ``_2`` (match1, match2) with their ground-truth body poses as odometry (``euroc_map.tum`` too);
    each query frame (``_1``, ``_3``) is a one-frame session with identity odometry, and
    ``euroc_query1_then_2`` is both, 10 s apart, with their true relative motion as odometry. Left and
    right are mono8. Bags already in ``out`` are reused."""
    import csv

    from vpr_ros.io.poses import pose_matrix

    with open(directory / "gt_poses.csv") as f:
        rows = {r["image"][:-4]: r for r in csv.DictReader(f)}

    def gray(name: str) -> npt.NDArray[np.uint8]:
        img = cv2.imread(str(directory / f"{name}.png"), cv2.IMREAD_GRAYSCALE)
        if img is None:
            raise FileNotFoundError(f"missing EuRoC frame {directory / name}.png")
        return img

    def pose(i: int) -> F64:
        r = rows[f"left_img_{i}"]
        return pose_matrix((float(r["x"]), float(r["y"]), float(r["z"])),
                           (float(r["qx"]), float(r["qy"]), float(r["qz"]), float(r["qw"])))

    def frame(stamp: int, i: int, T_odom: F64) -> list[tuple[int, str, str, Any]]:
        return [(stamp, IMAGE_TOPIC, "sensor_msgs/msg/Image", _image(stamp, gray(f"left_img_{i}"), "mono8")),
                (stamp, RIGHT_TOPIC, "sensor_msgs/msg/Image", _image(stamp, gray(f"right_img_{i}"), "mono8")),
                (stamp, ODOM_TOPIC, "nav_msgs/msg/Odometry", odometry_message(stamp, T_odom))]

    out.mkdir(parents=True, exist_ok=True)
    map_bag = out / "euroc_map"
    if not map_bag.exists():  # bags already in ``out`` are reused
        _write(map_bag, frame(start_ns, 0, pose(0)) + frame(start_ns + 30 * NS, 2, pose(2)))
        write_tum(out / "euroc_map.tum", [start_ns, start_ns + 30 * NS], [pose(0), pose(2)],
                  "EuRoC V1_01 ground truth of the map frames (state_groundtruth_estimate0): world_T_body")
    starts = []
    for k, i in enumerate((1, 3)):
        stamp = start_ns + (1000 + 100 * k) * NS
        name = f"euroc_query{k + 1}"
        if not (out / name).exists():
            _write(out / name, frame(stamp, i, np.eye(4)))
            write_tum(out / f"{name}.tum", [stamp], [pose(i)],
                      "EuRoC V1_01 ground truth (state_groundtruth_estimate0): world_T_body")
        starts.append(EurocStart(name, out / name, out / f"{name}.tum"))
    # the robot carried from query1 to query2 with exact odometry: the second frame may be confirmed by odometry
    name = "euroc_query1_then_2"
    if not (out / name).exists():
        stamps = [start_ns + 1200 * NS, start_ns + 1210 * NS]
        odom = [np.eye(4), np.linalg.inv(pose(1)) @ pose(3)]
        _write(out / name, frame(stamps[0], 1, odom[0]) + frame(stamps[1], 3, odom[1]))
        write_tum(out / f"{name}.tum", stamps, [pose(1), pose(3)],
                  "EuRoC V1_01 ground truth (state_groundtruth_estimate0): world_T_body")
    starts.append(EurocStart(name, out / name, out / f"{name}.tum"))
    return map_bag, starts
