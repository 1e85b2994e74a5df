"""SE(3) helpers shared by the pose-covariance tests (core/geometry/test_pose_covariance.py and
test_point_covariance.py)."""

from __future__ import annotations

import cv2
import numpy as np


def pose(rotvec, t) -> np.ndarray:
    """(4, 4) transform from a rotation vector (rad) and a translation."""
    T = np.eye(4)
    T[:3, :3] = cv2.Rodrigues(np.asarray(rotvec, np.float64))[0]
    T[:3, 3] = t
    return T


def log6(T: np.ndarray) -> np.ndarray:
    """(x, y, z, rx, ry, rz) of a small transform (first order, as the covariance is)."""
    return np.concatenate([T[:3, 3], cv2.Rodrigues(T[:3, :3])[0].reshape(3)])
