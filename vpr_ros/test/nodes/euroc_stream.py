"""The EuRoC stereo sample as a camera driver would publish it: raw images + stereo CameraInfo.

The CameraInfo pair is what ``camera_calibration`` writes for a raw stereo camera: K and D of each
camera, and R / P of the rectification computed from the sample's own extrinsics
(``cv2.stereoRectify``), so the node must recover the rig from R1, R2 and the right P.
"""

from __future__ import annotations

import cv2
import numpy as np
from sensor_msgs.msg import CameraInfo

from vpr_ros.cli.bench.geometry import load_euroc
from vpr_ros.core.geometry.camera import PinholeCamera, StereoRig
from vpr_ros.nodes.conversions import ns_to_stamp

__all__ = ["load_euroc", "stereo_camera_infos", "camera_truth"]


def _info(cam: PinholeCamera, R: np.ndarray, P: np.ndarray, stamp_ns: int, frame_id: str) -> CameraInfo:
    msg = CameraInfo(width=cam.width, height=cam.height, distortion_model="plumb_bob")
    msg.header.stamp = ns_to_stamp(stamp_ns)
    msg.header.frame_id = frame_id
    msg.k = [float(v) for v in cam.K.reshape(-1)]
    msg.d = [float(v) for v in np.pad(cam.D, (0, max(0, 5 - cam.D.size)))]  # plumb_bob has 5 terms
    msg.r = [float(v) for v in R.reshape(-1)]
    msg.p = [float(v) for v in P.reshape(-1)]
    return msg


def stereo_camera_infos(rig: StereoRig, stamp_ns: int = 0) -> tuple[CameraInfo, CameraInfo]:
    """(left, right) CameraInfo of the raw stereo pair ``rig`` (right-to-left extrinsic T_left_right)."""
    left, right = rig.left, rig.right
    T_right_left = np.linalg.inv(rig.T_left_right)  # stereoRectify wants x_right = R x_left + T
    R1, R2, P1, P2, *_ = cv2.stereoRectify(left.K, left.D, right.K, right.D, (left.width, left.height),
                                           np.ascontiguousarray(T_right_left[:3, :3]),
                                           np.ascontiguousarray(T_right_left[:3, 3:]), alpha=0)
    return (_info(left, R1, P1, stamp_ns, "cam0"), _info(right, R2, P2, stamp_ns, "cam1"))


def camera_truth(euroc: dict, query: str, match: str) -> np.ndarray:
    """Ground-truth T_match_query of the LEFT CAMERA frames (CameraInfo carries no body extrinsic)."""
    T_bc = euroc["left"].T_body_cam
    T_body = np.linalg.inv(euroc["gt"][match]) @ euroc["gt"][query]
    return np.linalg.inv(T_bc) @ T_body @ T_bc
