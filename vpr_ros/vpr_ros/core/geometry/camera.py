"""Camera intrinsics, distortion and stereo extrinsics, from the formats robots ship them in.

Sources: ``sensor_msgs/CameraInfo`` arrays (K, D, P, distortion_model), the ROS
``camera_calibration`` YAML (``camera_matrix`` / ``distortion_coefficients`` / ``projection_matrix``)
and the EuRoC / Kimera-VIO sensor YAML (``intrinsics: [fu, fv, cu, cv]``, ``T_BS``). Pixel
coordinates follow OpenCV: the centre of the top-left pixel is (0, 0).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import numpy.typing as npt
import yaml

from vpr_ros.core.errors import ConfigError

__all__ = ["PinholeCamera", "StereoRig", "camera_from_camera_info", "load_camera", "stereo_from_camera_infos",
           "stereo_from_extrinsics"]

F64 = npt.NDArray[np.float64]
# ROS distortion_model names -> the OpenCV model that undistorts them.
RADTAN = ("plumb_bob", "rational_polynomial", "radial-tangential", "radtan", "")
EQUIDISTANT = ("equidistant", "fisheye", "kannala_brandt")


@dataclasses.dataclass(frozen=True)
class PinholeCamera:
    """A calibrated camera.

    K: (3, 3) float64. D: (k,) float64 distortion (OpenCV order k1, k2, p1, p2[, k3...] for radtan;
    k1..k4 for equidistant). T_body_cam: (4, 4) float64 pose of the camera in the body frame
    (identity when the camera frame is the body frame).
    """

    K: F64
    D: F64
    width: int
    height: int
    distortion_model: str = "plumb_bob"
    T_body_cam: F64 = dataclasses.field(default_factory=lambda: np.eye(4))

    def __post_init__(self) -> None:
        K = np.asarray(self.K, np.float64).reshape(3, 3)
        if not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
            raise ConfigError(f"camera matrix K={K.tolist()} needs positive focal lengths; check the calibration")
        model = self.distortion_model.lower()
        if model not in RADTAN + EQUIDISTANT:
            raise ConfigError(f"distortion model {self.distortion_model!r} is not supported; use one of "
                              f"{', '.join(m for m in RADTAN + EQUIDISTANT if m)}")
        object.__setattr__(self, "K", K)
        object.__setattr__(self, "D", np.asarray(self.D, np.float64).reshape(-1))
        object.__setattr__(self, "distortion_model", model)
        object.__setattr__(self, "T_body_cam", np.asarray(self.T_body_cam, np.float64).reshape(4, 4))

    @property
    def is_fisheye(self) -> bool:
        return self.distortion_model in EQUIDISTANT

    def undistort_points(self, pixels: npt.ArrayLike) -> F64:
        """(N, 2) distorted pixels -> (N, 2) normalised image coordinates (x/z, y/z)."""
        pts = np.asarray(pixels, np.float64).reshape(-1, 1, 2)
        if len(pts) == 0:
            return np.zeros((0, 2))
        if self.is_fisheye:
            out = cv2.fisheye.undistortPoints(pts, self.K, self.D[:4])
        else:
            # OpenCV's default 5 iterations leave ~0.02 px near EuRoC's borders; iterate to convergence.
            # OpenCV 4 (next to a ROS distribution's numpy 1.x) takes the criteria in undistortPointsIter,
            # OpenCV 5 in undistortPoints itself.
            criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 50, 1e-12)
            dist = self.D if self.D.size else None
            if hasattr(cv2, "undistortPointsIter"):
                out = cv2.undistortPointsIter(pts, self.K, dist, None, None, criteria)
            else:
                out = cv2.undistortPoints(pts, self.K, dist, None, None, None, criteria)
        return out.reshape(-1, 2)

    def ideal_pixels(self, pixels: npt.ArrayLike) -> F64:
        """(N, 2) distorted pixels -> (N, 2) pixels of the same camera without distortion (K applied)."""
        n = self.undistort_points(pixels)
        return n @ self.K[:2, :2].T + self.K[:2, 2]

    def project(self, points_cam: npt.ArrayLike) -> F64:
        """(N, 3) points in the camera frame -> (N, 2) distorted pixels."""
        pts = np.asarray(points_cam, np.float64).reshape(-1, 1, 3)
        zero = np.zeros(3)
        if self.is_fisheye:
            out, _ = cv2.fisheye.projectPoints(pts, zero, zero, self.K, self.D[:4])
        else:
            out, _ = cv2.projectPoints(pts, zero, zero, self.K, self.D if self.D.size else None)
        return out.reshape(-1, 2)


@dataclasses.dataclass(frozen=True)
class StereoRig:
    """Left (reference) and right camera; T_left_right: (4, 4) pose of the right camera in the left frame."""

    left: PinholeCamera
    right: PinholeCamera
    T_left_right: F64

    @property
    def baseline_m(self) -> float:
        return float(np.linalg.norm(self.T_left_right[:3, 3]))

    def depth_sigma_coeff(self, disparity_sigma_px: float) -> float:
        """sigma_z / z^2 (1/m) of triangulated points: z = f b / d, so sigma_z = z^2 sigma_d / (f b),
        with f the left camera's mean focal length (pixels) and b the baseline (metres)."""
        focal = 0.5 * float(self.left.K[0, 0] + self.left.K[1, 1])
        return float(disparity_sigma_px) / (focal * max(self.baseline_m, 1e-9))


def camera_from_camera_info(K: Sequence[float], D: Sequence[float], width: int, height: int,
                            distortion_model: str = "plumb_bob", P: Sequence[float] | None = None,
                            rectified: bool = False, T_body_cam: npt.ArrayLike | None = None,
                            ) -> PinholeCamera:
    """A camera from ``sensor_msgs/CameraInfo`` fields (K: 9 values, D: k values, P: 12 values).

    rectified: the images are ``image_rect`` (already undistorted and rectified), so the camera is
    P's left 3x3 with no distortion, as ``image_geometry`` does.
    """
    T = np.eye(4) if T_body_cam is None else np.asarray(T_body_cam, np.float64)
    if rectified:
        if P is None:
            raise ConfigError("rectified=True needs the projection matrix P of the CameraInfo")
        p = np.asarray(P, np.float64).reshape(3, 4)
        return PinholeCamera(p[:, :3], np.zeros(0), int(width), int(height), "plumb_bob", T)
    return PinholeCamera(np.asarray(K, np.float64).reshape(3, 3), np.asarray(D, np.float64), int(width),
                         int(height), distortion_model or "plumb_bob", T)


def stereo_from_camera_infos(left: PinholeCamera, right_P: Sequence[float],
                             right: PinholeCamera | None = None) -> StereoRig:
    """A rectified stereo pair from the right CameraInfo's P: baseline = -P[0, 3] / P[0, 0] (ROS convention).

    ``left`` and ``right`` must then describe the rectified images (``camera_from_camera_info(...,
    rectified=True)``).
    """
    p = np.asarray(right_P, np.float64).reshape(3, 4)
    baseline = -p[0, 3] / p[0, 0]
    if not np.isfinite(baseline) or baseline <= 0:
        raise ConfigError(f"right camera P gives baseline {baseline!r} m; P[0, 3] must be -fx * baseline (< 0) "
                          "for the right camera of a rectified pair")
    T = np.eye(4)
    T[0, 3] = baseline
    right_cam = right or PinholeCamera(p[:, :3], np.zeros(0), left.width, left.height, "plumb_bob")
    return StereoRig(left, right_cam, T)


def stereo_from_projections(left: PinholeCamera, right: PinholeCamera, right_P: Sequence[float],
                            left_P: Sequence[float] | None = None, left_R: Sequence[float] | None = None,
                            right_R: Sequence[float] | None = None) -> StereoRig:
    """A stereo pair from the cameras' projection matrices P (and, for raw images, rectification R).

    Each camera's centre in the rectified frame is -K^-1 P[:, 3] (baseline -P[0, 3] / P[0, 0] for a
    horizontal pair) and a raw camera maps into that frame by its R, so T_left_right =
    [R_l^T R_r | R_l^T (c_r - c_l)]. R None or all zeros (monocular drivers) means no rotation:
    rectified images, or a pair that needs none.
    """
    def centre(P: Sequence[float]) -> F64:
        m = np.asarray(P, np.float64).reshape(3, 4)
        return -np.linalg.solve(m[:, :3], m[:, 3])

    def rotation(R: Sequence[float] | None) -> F64:
        r = np.zeros((3, 3)) if R is None else np.asarray(R, np.float64).reshape(3, 3)
        return np.eye(3) if not np.any(r) else r

    try:
        offset = centre(right_P) - (np.zeros(3) if left_P is None or not np.any(left_P) else centre(left_P))
    except np.linalg.LinAlgError:
        offset = np.full(3, np.nan)
    if not np.all(np.isfinite(offset)) or np.linalg.norm(offset) < 1e-6:
        raise ConfigError("the right camera's projection matrix P gives no baseline (P[0, 3] must be "
                          "-fx * baseline); give the stereo calibration of both cameras")
    R_l, R_r = rotation(left_R), rotation(right_R)
    T = np.eye(4)
    T[:3, :3] = R_l.T @ R_r
    T[:3, 3] = R_l.T @ offset
    return StereoRig(left, right, T)


def stereo_from_extrinsics(left: PinholeCamera, right: PinholeCamera) -> StereoRig:
    """A stereo pair from both cameras' body extrinsics (EuRoC/Kimera ``T_BS``)."""
    return StereoRig(left, right, np.linalg.inv(left.T_body_cam) @ right.T_body_cam)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read camera calibration {path}: {exc.strerror}; check the path") from exc
    # OpenCV FileStorage headers ("%YAML:1.0") and "!!opencv-matrix" tags are not plain YAML.
    text = re.sub(r"^%YAML:1\.0", "", text, flags=re.M).replace("!!opencv-matrix", "")
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"camera calibration {path} is not valid YAML: {exc}") from exc
    if not isinstance(doc, dict):
        raise ConfigError(f"camera calibration {path} must be a mapping")
    return doc


def _matrix(node: Any, rows: int, cols: int, what: str) -> F64:
    data = node.get("data") if isinstance(node, dict) else node
    arr = np.asarray(data, np.float64)
    if arr.size != rows * cols:
        raise ConfigError(f"{what} has {arr.size} values, expected {rows * cols}")
    return arr.reshape(rows, cols)


def load_camera(path: str | Path, rectified: bool = False) -> PinholeCamera:
    """Read a ROS ``camera_calibration`` YAML or a EuRoC/Kimera sensor YAML (detected by its keys)."""
    path = Path(path)
    doc = _read_yaml(path)
    try:
        if "camera_matrix" in doc:
            d = doc.get("distortion_coefficients") or {"data": []}
            P = doc.get("projection_matrix")
            return camera_from_camera_info(
                _matrix(doc["camera_matrix"], 3, 3, "camera_matrix").reshape(-1),
                np.asarray(d.get("data", []), np.float64), int(doc["image_width"]), int(doc["image_height"]),
                str(doc.get("distortion_model", "plumb_bob")),
                None if P is None else _matrix(P, 3, 4, "projection_matrix").reshape(-1), rectified)
        if "intrinsics" in doc:
            fu, fv, cu, cv = (float(v) for v in doc["intrinsics"])
            w, h = (int(v) for v in doc["resolution"])
            T = _matrix(doc["T_BS"], 4, 4, "T_BS") if "T_BS" in doc else np.eye(4)
            return PinholeCamera(np.array([[fu, 0, cu], [0, fv, cv], [0, 0, 1.0]]),
                                 np.asarray(doc.get("distortion_coefficients", []), np.float64), w, h,
                                 str(doc.get("distortion_model", "radtan")), T)
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"camera calibration {path}: missing or malformed field ({exc})") from None
    raise ConfigError(f"camera calibration {path} is neither a ROS camera_calibration YAML (camera_matrix) "
                      "nor a EuRoC/Kimera sensor YAML (intrinsics); convert it to one of them")
