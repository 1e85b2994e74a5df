"""Camera calibrations for bag replay: ``sensor_msgs/CameraInfo`` messages and calibration files -> cameras.

A :class:`Calibration` is a camera plus, when its source has them, the rectification rotation R and
the projection P of a stereo pair (CameraInfo ``r`` / ``p``, ``camera_calibration`` YAML
``rectification_matrix`` / ``projection_matrix``). :func:`stereo_rig` turns two of them into the
``StereoRig`` the core triangulates with: from R and P (raw or rectified images, the ROS way) or from
both cameras' body extrinsics (EuRoC / Kimera ``T_BS``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import yaml

from vpr_ros.core.geometry.camera import (PinholeCamera, StereoRig, camera_from_camera_info, load_camera, stereo_from_extrinsics,
                                 stereo_from_projections)
from vpr_ros.core.errors import ConfigError

__all__ = ["Calibration", "calibration_from_camera_info", "load_calibration", "stereo_rig", "on_base"]

F64 = npt.NDArray[np.float64]


@dataclasses.dataclass(frozen=True)
class Calibration:
    """camera: the calibration of the images as they are in the bag; R: (3, 3) rectification rotation
    (x_rect = R x_cam) or None; P: (3, 4) projection of the rectified camera or None."""

    camera: PinholeCamera
    R: F64 | None = None
    P: F64 | None = None


def _rp(r: Any, p: Any) -> tuple[F64 | None, F64 | None]:
    R = np.asarray(r, np.float64).reshape(3, 3) if r is not None and np.size(r) == 9 else None
    P = np.asarray(p, np.float64).reshape(3, 4) if p is not None and np.size(p) == 12 else None
    # An all-zero matrix is CameraInfo's "not set".
    return (None if R is None or not R.any() else R), (None if P is None or not P.any() else P)


def calibration_from_camera_info(msg: Any, rectified: bool, source: str) -> Calibration:
    """A Calibration from a CameraInfo message (rosbags or rclpy object); ``source`` names it in errors.

    rectified: the images are rectified (``image_rect``): the camera is P's left 3x3 without distortion.
    """
    R, P = _rp(msg.r, msg.p)
    try:
        camera = camera_from_camera_info(np.asarray(msg.k, np.float64), np.asarray(msg.d, np.float64),
                                         int(msg.width), int(msg.height), str(msg.distortion_model),
                                         None if P is None else P.reshape(-1), rectified)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return Calibration(camera, R, P)


def load_calibration(path: str | Path, rectified: bool = False) -> Calibration:
    """A Calibration from a ROS ``camera_calibration`` YAML or a EuRoC/Kimera sensor YAML (core ``load_camera``)."""
    path = Path(path)
    camera = load_camera(path, rectified)
    text = path.read_text()
    if "camera_matrix" not in text:  # EuRoC/Kimera: extrinsics T_BS (in the camera), no R/P
        return Calibration(camera)
    doc = yaml.safe_load(text)  # load_camera has read it: plain YAML

    def data(key: str) -> Any:
        node = doc.get(key)
        return node.get("data") if isinstance(node, dict) else node
    R, P = _rp(data("rectification_matrix"), data("projection_matrix"))
    return Calibration(camera, R, P)


def stereo_rig(left: Calibration, right: Calibration, rectified: bool) -> StereoRig:
    """The stereo pair of two calibrations.

    From P (and R): the right camera's centre in the rectified frame is -K_r^-1 P_r[:, 3] (baseline
    -P[0, 3] / P[0, 0] for a horizontal pair), and a raw camera maps to its rectified frame by R, so
    T_left_right = [R_l^T R_r | R_l^T (c_r - c_l)]. Without P, from both cameras' body extrinsics.
    """
    if right.P is not None:
        return stereo_from_projections(left.camera, right.camera, right.P, left.P,
                                       None if rectified else left.R, None if rectified else right.R)
    if not np.allclose(left.camera.T_body_cam, right.camera.T_body_cam):
        return stereo_from_extrinsics(left.camera, right.camera)
    raise ConfigError("the right camera calibration has neither a projection matrix P (CameraInfo p, "
                      "camera_calibration projection_matrix) nor body extrinsics (T_BS): the stereo baseline "
                      "is unknown; give the right camera's stereo calibration")


def on_base(calibration: Calibration, T_base_left: npt.ArrayLike, left: Calibration | None = None) -> Calibration:
    """``calibration`` with its camera's body frame made the robot's base frame (``frames.base_from_camera``).

    T_base_left: (4, 4) pose of the left (image) camera in the base frame. For the left camera
    (``left`` None) T_body_cam becomes T_base_left; another camera of the rig (``left`` given) keeps
    its pose relative to the left one from the files: T_base_left * T_left_body * T_body_cam, so
    EuRoC/Kimera ``T_BS`` pairs stay a rig. Identity T_base_left returns ``calibration`` unchanged.
    """
    T = np.asarray(T_base_left, np.float64)
    if np.allclose(T, np.eye(4)):
        return calibration
    cam = calibration.camera
    T_new = T if left is None else T @ np.linalg.inv(left.camera.T_body_cam) @ cam.T_body_cam
    return dataclasses.replace(calibration, camera=dataclasses.replace(cam, T_body_cam=T_new))
