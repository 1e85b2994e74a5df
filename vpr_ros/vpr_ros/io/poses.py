"""Pose helpers for bag replay: quaternions, 4x4 transforms and interpolation at image stamps."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["pose_matrix", "matrix_to_pose", "interpolate_pose", "PoseTrack"]

F64 = npt.NDArray[np.float64]


def _rotation(qx: float, qy: float, qz: float, qw: float) -> F64:
    q = np.array([qw, qx, qy, qz], dtype=np.float64)
    norm = np.linalg.norm(q)
    if not np.isfinite(norm) or norm < 1e-12:
        raise ValueError(f"quaternion {q.tolist()} (w, x, y, z) has no direction")
    w, x, y, z = q / norm
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def pose_matrix(position: tuple[float, float, float], quaternion: tuple[float, float, float, float],
                ) -> F64:
    """(4, 4) float64 transform from a position (x, y, z) and a quaternion (x, y, z, w)."""
    matrix = np.eye(4)
    matrix[:3, :3] = _rotation(*quaternion)
    matrix[:3, 3] = position
    return matrix


def matrix_to_pose(matrix: F64) -> tuple[tuple[float, float, float], tuple[float, float, float, float]]:
    """Inverse of :func:`pose_matrix`: ((x, y, z), (qx, qy, qz, qw)) from a (4, 4) transform."""
    r = matrix[:3, :3]
    # Shepperd's method: pick the largest diagonal term for numerical stability
    trace = np.trace(r)
    if trace > 0:
        s = 2.0 * np.sqrt(trace + 1.0)
        q = (r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s, 0.25 * s
    elif r[0, 0] > r[1, 1] and r[0, 0] > r[2, 2]:
        s = 2.0 * np.sqrt(1.0 + r[0, 0] - r[1, 1] - r[2, 2])
        q = 0.25 * s, (r[0, 1] + r[1, 0]) / s, (r[0, 2] + r[2, 0]) / s, (r[2, 1] - r[1, 2]) / s
    elif r[1, 1] > r[2, 2]:
        s = 2.0 * np.sqrt(1.0 + r[1, 1] - r[0, 0] - r[2, 2])
        q = (r[0, 1] + r[1, 0]) / s, 0.25 * s, (r[1, 2] + r[2, 1]) / s, (r[0, 2] - r[2, 0]) / s
    else:
        s = 2.0 * np.sqrt(1.0 + r[2, 2] - r[0, 0] - r[1, 1])
        q = (r[0, 2] + r[2, 0]) / s, (r[1, 2] + r[2, 1]) / s, 0.25 * s, (r[1, 0] - r[0, 1]) / s
    t = matrix[:3, 3]
    return (float(t[0]), float(t[1]), float(t[2])), tuple(float(v) for v in q)  # type: ignore[return-value]


def _slerp(q0: F64, q1: F64, alpha: float) -> F64:
    dot = float(np.dot(q0, q1))
    if dot < 0.0:  # take the short way round
        q1, dot = -q1, -dot
    if dot > 0.9995:
        q = q0 + alpha * (q1 - q0)
        return q / np.linalg.norm(q)
    theta = np.arccos(dot)
    return (np.sin((1 - alpha) * theta) * q0 + np.sin(alpha * theta) * q1) / np.sin(theta)


def interpolate_pose(a: F64, b: F64, alpha: float) -> F64:
    """The (4, 4) pose a fraction ``alpha`` (0 = ``a``, 1 = ``b``) of the way from ``a`` to ``b``:
    translation linear, rotation by spherical linear interpolation (the shorter arc)."""
    q = _slerp(np.array(matrix_to_pose(a)[1]), np.array(matrix_to_pose(b)[1]), alpha)
    p = (1 - alpha) * a[:3, 3] + alpha * b[:3, 3]
    return pose_matrix(tuple(p), tuple(q))


class PoseTrack:
    """Time-ordered poses queried at image stamps.

    Inside the track a pose is interpolated (linear position, slerp rotation) when its two
    neighbours are at most ``max_gap_sec`` apart; outside it the nearest pose is used when it is
    within ``max_gap_sec``; otherwise there is no pose (None).
    """

    def __init__(self, stamps_ns: list[int], poses: list[F64], max_gap_sec: float = 0.5) -> None:
        order = np.argsort(np.asarray(stamps_ns, dtype=np.int64), kind="stable")
        self._stamps = np.asarray(stamps_ns, dtype=np.int64)[order]
        self._poses = [poses[i] for i in order]
        self._max_gap_ns = int(max_gap_sec * 1e9)

    def __len__(self) -> int:
        return len(self._poses)

    def at(self, stamp_ns: int) -> F64 | None:
        """(4, 4) float64 world_T_body at ``stamp_ns``, or None when no pose is close enough."""
        if not self._poses:
            return None
        i = int(np.searchsorted(self._stamps, stamp_ns))
        if i < len(self._stamps) and self._stamps[i] == stamp_ns:
            return self._poses[i].copy()
        if i == 0 or i == len(self._stamps):
            j = 0 if i == 0 else i - 1
            near = abs(int(self._stamps[j]) - stamp_ns) <= self._max_gap_ns
            return self._poses[j].copy() if near else None
        t0, t1 = int(self._stamps[i - 1]), int(self._stamps[i])
        if t1 - t0 > self._max_gap_ns:
            return None
        return interpolate_pose(self._poses[i - 1], self._poses[i], (stamp_ns - t0) / (t1 - t0))
