"""SIMULATED (RENDERED from real photographs) data of the relocalisation node tests: one room
(``cli/rendered_scenes.simulated_room``: real photographs on its walls, exact depth), a mapping path
whose saved map defines the frame ``map``, and a kidnapped path in an odometry frame unknown to the map.

Frames: the renderer's world has OpenCV axes (x right, y down, z forward); ``map`` is that world
turned to ROS axes (x forward, y left, z up), and the camera's optical frame sits on the robot at
:data:`BASE_FROM_CAMERA` (the optical rotation, 0.2 m ahead, 0.4 m up), given to the node through
``frames.base_from_camera`` (the parameter path). True poses are ``T_map_base``; the kidnapped
session's odometry is ``T_odom_base = T_MAP_ODOM^-1 T_map_base``: ``odom`` is not ``map``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import numpy.typing as npt
from nav_msgs.msg import Odometry
from scipy.spatial.transform import Rotation
from sensor_msgs.msg import CameraInfo, Image

from vpr_ros.cli.rendered_rooms import RENDERED_LABEL, RenderCamera, pose_from_euler, rendered_view
from vpr_ros.cli.rendered_scenes import simulated_camera, simulated_room
from vpr_ros.core.config import config_from_flat
from vpr_ros.core.detector import LoopClosureDetector
from vpr_ros.core.geometry.camera import PinholeCamera
from vpr_ros.core.types import Frame
from vpr_ros.nodes.conversions import ns_to_stamp

from tiny_extractor import TinyExtractor

F64 = npt.NDArray[np.float64]
LABEL = RENDERED_LABEL
MAP_FROM_WORLD = np.array([[0.0, 0, 1, 0], [-1, 0, 0, 0], [0, -1, 0, 0], [0, 0, 0, 1]])
BASE_FROM_CAMERA = MAP_FROM_WORLD.copy()
BASE_FROM_CAMERA[:3, 3] = [0.2, 0.0, 0.4]
SIZE = (320, 240)
#: Mapping views (x offset m, yaw deg) across the room's middle; query views (x, y, z offsets, yaw).
MAP_VIEWS = ((-0.6, -10.0), (-0.3, -5.0), (0.0, 0.0), (0.3, 5.0), (0.6, 10.0))
QUERY_VIEWS = ((-0.15, 0.05, 0.2, -3.0), (0.1, 0.05, 0.2, 2.0), (0.35, 0.05, 0.2, 6.0))
#: Where the kidnapped session's odometry frame lies in the map (its odometry: T_map_odom^-1 T_map_base).
T_MAP_ODOM = np.eye(4)
T_MAP_ODOM[:3, :3] = Rotation.from_euler("z", 40.0, degrees=True).as_matrix()
T_MAP_ODOM[:3, 3] = [1.5, -0.7, 0.0]
#: Node parameters every relocalisation scenario uses (the map's own were the same).
PARAMS = {"verify.min_matches": 60, "keyframes.min_translation_m": 0.0, "keyframes.min_rotation_deg": 0.0}


@dataclasses.dataclass(frozen=True)
class View:
    """One SIMULATED frame: RGB image, z-depth (m, NaN = none) and the true T_map_base."""

    image: npt.NDArray[np.uint8]
    depth: npt.NDArray[np.float32]
    T_map_base: F64


def base_from_camera_param() -> str:
    """:data:`BASE_FROM_CAMERA` as the frames.base_from_camera value 'x y z qx qy qz qw'."""
    q = Rotation.from_matrix(BASE_FROM_CAMERA[:3, :3]).as_quat()
    return " ".join(f"{v:.12g}" for v in (*BASE_FROM_CAMERA[:3, 3], *q))


def render_camera() -> RenderCamera:
    return simulated_camera(*SIZE)


def _views(poses_world: list[F64]) -> list[View]:
    room, camera = simulated_room(3), render_camera()
    out = []
    for T_world_cam in poses_world:
        v = rendered_view(room, camera, T_world_cam, supersample=1)
        out.append(View(v.image, v.depth, MAP_FROM_WORLD @ T_world_cam @ np.linalg.inv(BASE_FROM_CAMERA)))
    return out


def _middle() -> F64:
    lo, hi = simulated_room(3).interior
    return (lo + hi) / 2


def map_views() -> list[View]:
    mid = _middle()
    return _views([pose_from_euler(mid + [x, 0.0, 0.0], yaw) for x, yaw in MAP_VIEWS])


def query_views() -> list[View]:
    mid = _middle()
    return _views([pose_from_euler(mid + [x, y, z], yaw) for x, y, z, yaw in QUERY_VIEWS])


def save_map(path: Path, views: list[View]) -> int:
    """The mapping session (session 'mapping', exact odometry = T_map_base, the camera on the robot at
    BASE_FROM_CAMERA, as a node with that parameter stores it) saved at ``path``; its keyframe count."""
    camera = render_camera()
    pinhole = PinholeCamera(camera.K, camera.D, camera.width, camera.height, "plumb_bob", BASE_FROM_CAMERA)
    detector = LoopClosureDetector(config_from_flat({**PARAMS, "detector.session_id": "mapping"}), TinyExtractor())
    for i, v in enumerate(views):
        detector.process(Frame((1 + i) * 10**9, v.image, v.T_map_base, camera=pinhole, depth=v.depth))
    return detector.save_map(path)


def camera_info(stamp_ns: int, frame_id: str) -> CameraInfo:
    camera = render_camera()
    msg = CameraInfo(width=camera.width, height=camera.height, distortion_model="plumb_bob")
    msg.header.stamp, msg.header.frame_id = ns_to_stamp(stamp_ns), frame_id
    msg.k = [float(v) for v in camera.K.reshape(9)]
    msg.d = [float(v) for v in camera.D]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    msg.p = [float(v) for v in np.hstack([camera.K, np.zeros((3, 1))]).reshape(12)]
    return msg


def depth_image(depth: npt.NDArray[np.float32], stamp_ns: int, frame_id: str) -> Image:
    """32FC1 metres (NaN = no depth), as a depth camera driver publishes it."""
    d = np.ascontiguousarray(depth, np.float32)
    msg = Image(height=d.shape[0], width=d.shape[1], encoding="32FC1", is_bigendian=0, step=d.shape[1] * 4)
    msg.header.stamp, msg.header.frame_id = ns_to_stamp(stamp_ns), frame_id
    msg.data = d.tobytes()
    return msg


def odometry(T_odom_base: F64, stamp_ns: int) -> Odometry:
    msg = Odometry()
    msg.header.stamp, msg.header.frame_id, msg.child_frame_id = ns_to_stamp(stamp_ns), "odom", "base_link"
    q = Rotation.from_matrix(T_odom_base[:3, :3]).as_quat()
    p = msg.pose.pose
    p.position.x, p.position.y, p.position.z = (float(v) for v in T_odom_base[:3, 3])
    p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w = (float(v) for v in q)
    return msg
