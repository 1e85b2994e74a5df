"""Sparse geometry of a keyframe: keypoints, descriptors and their 3-D points (stereo or RGB-D).

What the map stores per keyframe for relative-pose estimation (``types.KeyframeGeometry``): not whole
depth images, only keypoints with depth. Points are in the keyframe's (left) camera frame.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from vpr_ros.core.geometry.camera import PinholeCamera, StereoRig
from vpr_ros.core.config import GeometryConfig
from vpr_ros.core.geometry.correspondences import descriptor_distances, detect_keypoints
from vpr_ros.core.errors import InputError
from vpr_ros.core.types import Frame, KeyframeGeometry

__all__ = ["depth_from_raw", "depth_points", "stereo_points", "keyframe_geometry", "frame_geometry", "camera_of",
           "depth_sigma_of"]

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

STEREO_EPIPOLAR_PX = 2.0  # left-right matches farther than this from the epipolar line are wrong
STEREO_REPROJ_PX = 1.5


def depth_from_raw(encoding: str, height: int, width: int, step: int, data: bytes | memoryview,
                   is_bigendian: bool = False) -> npt.NDArray[np.generic]:
    """A ``sensor_msgs/Image`` depth message's fields -> (H, W) uint16 mm (16UC1/mono16) or float32 m (32FC1)."""
    kinds = {"16uc1": np.dtype("<u2"), "mono16": np.dtype("<u2"), "32fc1": np.dtype("<f4")}
    dtype = kinds.get(encoding.lower())
    if dtype is None:
        raise InputError(f"depth encoding {encoding!r} is not supported; publish 16UC1 (mm) or 32FC1 (m)")
    if is_bigendian:
        dtype = dtype.newbyteorder(">")
    row_bytes = width * dtype.itemsize
    buf = np.frombuffer(data, np.uint8)
    if height <= 0 or width <= 0 or step < row_bytes or buf.size < step * (height - 1) + row_bytes:
        raise InputError(f"depth image {width}x{height} step {step} does not fit its {buf.size} data bytes")
    rows = np.lib.stride_tricks.as_strided(buf, (height, row_bytes), (step, 1))
    out = np.ascontiguousarray(rows).view(dtype).reshape(height, width)
    return out.astype(np.uint16 if dtype.kind == "u" else np.float32)


def depth_points(camera: PinholeCamera, keypoints: npt.ArrayLike, depth: npt.NDArray[np.generic],
                 max_depth_m: float) -> F32:
    """(N, 3) float32 camera-frame points of keypoints (N, 2) from an aligned depth image.

    depth: (H, W) uint16 millimetres (16UC1) or float32 metres (32FC1); 0, NaN or beyond
    ``max_depth_m`` gives a NaN row. The depth of the nearest pixel is used.
    """
    kp = np.asarray(keypoints, np.float64).reshape(-1, 2)
    if depth.ndim != 2:
        raise InputError(f"depth image must be (H, W), got {depth.shape}")
    if depth.dtype == np.uint16:
        metres = depth.astype(np.float32) / 1000.0
    elif depth.dtype == np.float32:
        metres = depth
    else:
        raise InputError(f"depth dtype {depth.dtype} is not supported; use 16UC1 (mm) or 32FC1 (m)")
    out = np.full((len(kp), 3), np.nan, np.float32)
    if len(kp) == 0:
        return out
    col = np.clip(np.rint(kp[:, 0]).astype(int), 0, depth.shape[1] - 1)
    row = np.clip(np.rint(kp[:, 1]).astype(int), 0, depth.shape[0] - 1)
    z = metres[row, col].astype(np.float64)
    ok = np.isfinite(z) & (z > 0) & (z <= max_depth_m)
    n = camera.undistort_points(kp)
    out[ok] = np.concatenate([n[ok] * z[ok, None], z[ok, None]], axis=1)
    return out


def stereo_points(rig: StereoRig, keypoints: npt.ArrayLike, descriptors: npt.NDArray[np.generic],
                  right_image: npt.NDArray[np.uint8], kind: str, max_keypoints: int, max_depth_m: float,
                  ratio: float = 0.85) -> F32:
    """(N, 3) float32 left-camera points of left keypoints (N, 2), triangulated with the right image.

    Right keypoints are matched by descriptor among those within 2 px of the epipolar line (works
    for rectified pairs and for raw pairs with extrinsics, e.g. EuRoC); NaN rows where no match,
    negative depth, a reprojection error over 1.5 px or depth beyond ``max_depth_m``.
    """
    kp0 = np.asarray(keypoints, np.float64).reshape(-1, 2)
    out = np.full((len(kp0), 3), np.nan, np.float32)
    kp1, desc1 = detect_keypoints(right_image, kind, max_keypoints)
    if len(kp0) == 0 or len(kp1) < 2:
        return out
    T_rl = np.linalg.inv(rig.T_left_right)
    R, t = T_rl[:3, :3], T_rl[:3, 3]
    n0 = rig.left.undistort_points(kp0)
    n1 = rig.right.undistort_points(kp1)
    h0 = np.concatenate([n0, np.ones((len(n0), 1))], axis=1)
    h1 = np.concatenate([n1, np.ones((len(n1), 1))], axis=1)
    lines = h0 @ (_skew(t) @ R).T  # epipolar lines E x0 in the right image
    num = np.abs(lines @ h1.T)  # (N0, N1)
    dist_px = num / np.linalg.norm(lines[:, :2], axis=1, keepdims=True) * rig.right.K[0, 0]
    dist = descriptor_distances(descriptors, desc1)
    dist[dist_px > STEREO_EPIPOLAR_PX] = np.inf
    order = np.argsort(dist, axis=1)[:, :2]
    rows = np.arange(len(kp0))
    best, second = dist[rows, order[:, 0]], dist[rows, order[:, 1]]
    ok = np.isfinite(best) & (best < ratio * second)
    i0, i1 = rows[ok], order[ok, 0]
    if len(i0) == 0:
        return out
    P0 = np.hstack([np.eye(3), np.zeros((3, 1))])
    P1 = np.hstack([R, t[:, None]])
    X = _triangulate(P0, P1, n0[i0], n1[i1])
    X1 = X @ R.T + t
    good = (X[:, 2] > 0) & (X1[:, 2] > 0) & (X[:, 2] <= max_depth_m)
    err0 = np.linalg.norm(X[:, :2] / X[:, 2:3] - n0[i0], axis=1) * rig.left.K[0, 0]
    err1 = np.linalg.norm(X1[:, :2] / X1[:, 2:3] - n1[i1], axis=1) * rig.right.K[0, 0]
    good &= (err0 < STEREO_REPROJ_PX) & (err1 < STEREO_REPROJ_PX)
    out[i0[good]] = X[good].astype(np.float32)
    return out


def _skew(v: F64) -> F64:
    return np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])


def _triangulate(P0: F64, P1: F64, x0: F64, x1: F64) -> F64:
    """Linear (DLT) triangulation of normalised points; (N, 3)."""
    A = np.stack([x0[:, 0:1] * P0[2] - P0[0], x0[:, 1:2] * P0[2] - P0[1],
                  x1[:, 0:1] * P1[2] - P1[0], x1[:, 1:2] * P1[2] - P1[1]], axis=1)  # (N, 4, 4)
    _, _, vt = np.linalg.svd(A)
    Xh = vt[:, -1]
    with np.errstate(divide="ignore", invalid="ignore"):
        return Xh[:, :3] / Xh[:, 3:4]


def keyframe_geometry(image: npt.NDArray[np.uint8], camera: PinholeCamera, config: GeometryConfig,
                      depth: npt.NDArray[np.generic] | None = None, right: npt.NDArray[np.uint8] | None = None,
                      stereo: StereoRig | None = None) -> KeyframeGeometry:
    """Keypoints of ``image`` with 3-D points from ``depth`` (preferred) or ``right`` + ``stereo``, and
    the points' depth noise (``geometry.depth_sigma_coeff`` for depth images, from
    ``geometry.stereo_disparity_sigma_px`` and the rig for stereo)."""
    kp, desc = detect_keypoints(image, config.keypoints, config.max_keypoints)
    if depth is not None:
        if depth.shape[:2] != image.shape[:2]:
            raise InputError(f"depth image {depth.shape[:2]} is not aligned with the image {image.shape[:2]}; "
                             "use the depth topic registered to the colour camera")
        pts = depth_points(camera, kp, depth, config.max_depth_m)
        coeff = config.depth_sigma_coeff
    elif right is not None and stereo is not None:
        pts = stereo_points(stereo, kp, desc, right, config.keypoints, config.max_keypoints,
                            config.max_depth_m, config.ratio)
        coeff = stereo.depth_sigma_coeff(config.stereo_disparity_sigma_px)
    else:
        pts = np.full((len(kp), 3), np.nan, np.float32)
        coeff = 0.0
    return KeyframeGeometry(keypoints=kp, descriptors=desc, points3d=pts,
                            image_hw=(int(image.shape[0]), int(image.shape[1])), K=camera.K.copy(),
                            D=camera.D.copy(), distortion_model=camera.distortion_model,
                            T_body_cam=camera.T_body_cam.copy(), depth_sigma_coeff=coeff)


def frame_geometry(frame: Frame, config: GeometryConfig) -> KeyframeGeometry | None:
    """The KeyframeGeometry of a Frame's geometry inputs, or None without a camera or with method=off.

    For the node: fill ``Frame.camera`` from CameraInfo (``camera.camera_from_camera_info``),
    ``Frame.depth`` from the aligned depth image, or ``Frame.right`` + ``Frame.stereo``
    (``camera.stereo_from_camera_infos``) from the right camera.
    """
    if config.method == "off" or frame.camera is None:
        return None
    return keyframe_geometry(frame.image, frame.camera, config, frame.depth, frame.right, frame.stereo)


def camera_of(geometry: KeyframeGeometry) -> PinholeCamera:
    """The camera stored with a keyframe's geometry."""
    h, w = geometry.image_hw
    return PinholeCamera(geometry.K, geometry.D, w, h, geometry.distortion_model, geometry.T_body_cam)


def depth_sigma_of(geometry: KeyframeGeometry, config: GeometryConfig) -> float:
    """The keyframe's depth noise coefficient (sigma_z = coeff * z^2); unknown (NaN: a map or peer
    from before it was stored) counts as ``config.depth_sigma_coeff``, a real sensor's, not as exact."""
    coeff = float(geometry.depth_sigma_coeff)
    return coeff if np.isfinite(coeff) else float(config.depth_sigma_coeff)
