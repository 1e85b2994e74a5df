"""``vpr-ros replay`` options for the geometry inputs: calibration, aligned depth, right camera.

With them every keyframe gets keypoints (and 3-D points with depth or stereo) and every accepted
loop a measured relative pose (docs/geometry.md, docs/replay.md). Calibration files are read here,
before the model loads, so a wrong path fails at once.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from vpr_ros.cli.arg_types import positive_float
from vpr_ros.core.config import FramesConfig
from vpr_ros.core.errors import ConfigError
from vpr_ros.core.localization.map_pose import base_from_camera_matrix
from vpr_ros.io.calibration import Calibration, load_calibration, on_base, stereo_rig
from vpr_ros.io.frame_sync import GeometryInputs

__all__ = ["add_arguments", "geometry_inputs"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("geometry inputs (relative pose of each loop; docs/replay.md)")
    left = g.add_mutually_exclusive_group()
    left.add_argument("--camera-info-topic", metavar="TOPIC",
                      help="sensor_msgs/CameraInfo of the image topic in the bag")
    left.add_argument("--camera-info", metavar="FILE",
                      help="calibration of the image topic: ROS camera_calibration YAML (or EuRoC/Kimera "
                           "sensor YAML, whose T_BS makes poses body poses)")
    g.add_argument("--depth-topic", metavar="TOPIC",
                   help="depth image aligned to the image topic, 16UC1 (mm) or 32FC1 (m): metric poses (PnP)")
    g.add_argument("--right-image-topic", metavar="TOPIC",
                   help="right image of a stereo pair: metric poses (PnP); needs a right calibration")
    right = g.add_mutually_exclusive_group()
    right.add_argument("--right-camera-info-topic", metavar="TOPIC",
                       help="sensor_msgs/CameraInfo of the right camera (its P gives the baseline)")
    right.add_argument("--right-camera-info", metavar="FILE",
                       help="calibration of the right camera (projection_matrix, or T_BS of both cameras)")
    g.add_argument("--rectified", action="store_true",
                   help="the image topics are rectified (image_rect): cameras from P, no distortion")
    g.add_argument("--sync-tolerance-ms", type=_non_negative_ms, default=5.0, metavar="MS",
                   help="a depth or right image pairs with the image whose header stamp is within MS "
                        "milliseconds (default 5, as the node's sync.tolerance_sec; 0: equal stamps); "
                        "images without one are replayed without it and counted")


def _non_negative_ms(text: str) -> float:
    value = 0.0 if text.strip() in ("0", "0.0") else positive_float(text)
    if value > 1000:
        raise argparse.ArgumentTypeError(f"{text} ms is more than a second; stamps that far apart are not a pair")
    return value


def _calibration(path: str, rectified: bool, option: str) -> Calibration:
    if not Path(path).is_file():
        raise ConfigError(f"{option} {path}: no such file; give the camera calibration YAML")
    return load_calibration(path, rectified)


def geometry_inputs(args: argparse.Namespace, frames: FramesConfig | None = None) -> GeometryInputs | None:
    """The geometry inputs the options ask for, or None (no calibration: loops without a pose).

    frames: with a ``frames.base_from_camera`` other than the identity, the cameras' body frame is the
    robot's base frame (calibration.on_base), so keyframes, loop poses and relocalisation fixes are
    of the base frame; the identity keeps the calibration's own T_body_cam.
    """
    a: Any = args
    T_base_cam = None if frames is None else base_from_camera_matrix(frames)
    moved = T_base_cam is not None and not np.allclose(T_base_cam, np.eye(4))
    if moved and bool(a.camera_info_topic) != bool(a.right_camera_info_topic) and a.right_image_topic:
        raise ConfigError("with frames.base_from_camera, give both stereo calibrations the same way: two "
                          "camera_info topics or two files (--camera-info / --right-camera-info)")
    has_left = bool(a.camera_info_topic or a.camera_info)
    if not has_left:
        extra = [o for o, v in (("--depth-topic", a.depth_topic), ("--right-image-topic", a.right_image_topic),
                                ("--right-camera-info-topic", a.right_camera_info_topic),
                                ("--right-camera-info", a.right_camera_info)) if v]
        if extra:
            raise ConfigError(f"{', '.join(extra)} needs the calibration of the image topic: add "
                              "--camera-info-topic TOPIC or --camera-info FILE")
        return None
    if (a.right_camera_info_topic or a.right_camera_info) and not a.right_image_topic:
        raise ConfigError("a right camera calibration without --right-image-topic: add the right image topic")
    if a.right_image_topic and not (a.right_camera_info_topic or a.right_camera_info):
        raise ConfigError("--right-image-topic needs the right camera's calibration: add "
                          "--right-camera-info-topic TOPIC or --right-camera-info FILE")
    if a.depth_topic and a.right_image_topic:
        raise ConfigError("give --depth-topic or --right-image-topic, not both")
    inputs = GeometryInputs(
        camera_info_topic=a.camera_info_topic,
        camera=_calibration(a.camera_info, a.rectified, "--camera-info") if a.camera_info else None,
        depth_topic=a.depth_topic, right_image_topic=a.right_image_topic,
        right_camera_info_topic=a.right_camera_info_topic,
        right_camera=(_calibration(a.right_camera_info, a.rectified, "--right-camera-info")
                      if a.right_camera_info else None),
        rectified=bool(a.rectified), sync_tolerance_sec=float(a.sync_tolerance_ms) / 1e3)
    if moved and inputs.camera is None:  # camera_info topics: moved as they are read (io/frame_sync.py)
        inputs = dataclasses.replace(inputs, T_base_cam=T_base_cam)
    elif moved:
        right = None if inputs.right_camera is None else on_base(inputs.right_camera, T_base_cam, inputs.camera)
        inputs = dataclasses.replace(inputs, camera=on_base(inputs.camera, T_base_cam), right_camera=right)
    if inputs.camera is not None and inputs.right_camera is not None:
        stereo_rig(inputs.camera, inputs.right_camera, inputs.rectified)  # a pair without a baseline fails now
    return inputs
