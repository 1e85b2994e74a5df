"""A SIMULATED (RENDERED from real photographs) room mapped by a few RGB-D keyframes, and kidnapped
query views in it, for the relocaliser's tests (TinyExtractor: fast; SIFT + PnP: the real geometry)."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
from vpr_ros.cli.rendered_rooms import pose_from_euler, rendered_view
from vpr_ros.cli.rendered_scenes import simulated_camera, simulated_room
from vpr_ros.core.config import config_from_flat
from vpr_ros.core.detector import LoopClosureDetector
from vpr_ros.core.geometry.camera import PinholeCamera
from vpr_ros.core.types import Frame

NS = 10**9
MAP_VIEWS = [(-1.0, -30), (-0.5, -15), (0.0, 0), (0.5, 15), (1.0, 30), (0.0, 45), (0.0, -45)]
QUERY_VIEWS = [(-0.8, -25), (-0.3, -10), (0.2, 5), (0.7, 20)]
BASE = {"detector.robot_id": "mapper", "detector.session_id": "day1", "keyframes.min_translation_m": 0.0,
        "keyframes.min_rotation_deg": 0.0, "verify.min_matches": 20, "verify.temporal_consistency": 1,
        "geometry.depth_sigma_coeff": 0.0}  # rendered depth is exact


@dataclasses.dataclass
class Scene:
    """Rendered views: map (T_world_cam, image, depth) and queries; SIMULATED."""

    camera: PinholeCamera
    map_views: list
    query_views: list


@functools.lru_cache(maxsize=2)
def scene(only_plane: str = "") -> Scene:
    """Rendered once per test process (about 1 s). only_plane: that plane of the room alone (e.g.
    "back": the wall the views face, one surface: a picture seen alone)."""
    room = simulated_room(3)
    if only_plane:
        room = dataclasses.replace(room, planes=tuple(p for p in room.planes if p.name == only_plane))
    cam = simulated_camera(320, 240)

    def render(x, yaw, y=0.0, z=2.0, pitch=0.0):
        T = pose_from_euler([x, y, z], yaw, pitch)
        v = rendered_view(room, cam, T, supersample=1)
        return T, v.image, v.depth
    return Scene(PinholeCamera(cam.K, cam.D, cam.width, cam.height),
                 [render(x, yaw) for x, yaw in MAP_VIEWS],
                 [render(x, yaw, 0.1, 2.3, 3.0) for x, yaw in QUERY_VIEWS])


def mapped_detector(scene: Scene, extractor, overrides: dict | None = None, copies_shift_m: tuple[float, ...] = (0.0,),
                    T_body_cam: np.ndarray | None = None, depth: bool = True) -> LoopClosureDetector:
    """A detector holding the map session mapper/day1 (one copy of the room's keyframes per shift along
    world x: two copies = look-alike places), then switched to a new session like a loaded map.
    depth False: a map of a single camera (relative poses from the essential matrix)."""
    config = config_from_flat({**BASE, **(overrides or {})})
    det = LoopClosureDetector(config, extractor)
    B = np.eye(4) if T_body_cam is None else T_body_cam
    cam = dataclasses.replace(scene.camera, T_body_cam=B)
    i = 0
    for shift in copies_shift_m:
        for T, image, depth_image in scene.map_views:
            T = T.copy()
            T[0, 3] += shift
            det.process(Frame(i * NS, image, T @ np.linalg.inv(B), cam, depth_image if depth else None))
            i += 1
    det.new_session()
    return det


def query_frame(scene: Scene, k: int, stamp_s: float, *, depth: bool = True, T_body_cam: np.ndarray | None = None,
                odom_error: np.ndarray | None = None) -> Frame:
    """Query view ``k``: odometry of a kidnapped start (identity at view 0), camera pose as the body."""
    T0 = scene.query_views[0][0]
    T, image, d = scene.query_views[k]
    odom = np.linalg.inv(T0) @ T
    if odom_error is not None:
        odom = odom @ odom_error
    B = np.eye(4) if T_body_cam is None else T_body_cam
    cam = dataclasses.replace(scene.camera, T_body_cam=B)
    return Frame(round(stamp_s * NS), image, odom, cam, d if depth else None)
