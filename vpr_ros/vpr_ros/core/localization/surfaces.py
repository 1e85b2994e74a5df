"""How many surfaces does a fix's evidence rest on? One plane is not enough to know the place.

A metric relative pose rests on the 3-D points of the matched map keyframe (its inliers,
``PoseEstimate.inlier_points``). When every one of them lies on one plane, the evidence is a picture:
one poster, sign or photograph seen alone. The pose relative to that picture can be exact while the
place is wrong: the same picture hangs elsewhere (a look-alike place the map never saw: a copy of a
mapped room, a second copy of a poster). Agreement between candidates or consecutive keyframes does
not help when they all see that same picture. So a fix needs its supporting points, pooled over the
agreeing evidence in the map frame, to span at least ``relocalization.min_surfaces`` planes (2 by
default): two walls, a wall and the floor, or a picture and the furniture in front of it. A robot that
sees one wall alone is refused (``single_surface``) until it turns or moves enough to see a second
surface, which odometry then ties to the first.

Planes are found by sequential RANSAC (seeded: the same evidence gives the same answer): the
dominant plane first, then among the points it leaves; a plane counts when at least
:data:`MIN_PLANE_POINTS` points lie within their tolerance of it (:func:`support_points`: 2 cm plus 1 %
of the point's range from the camera that measured it, covering stereo and RGB-D depth noise), and a
second plane counts only when it differs from the first (by :data:`MIN_ANGLE_DEG` or, parallel, by
more than three tolerances: two faces of one noisy wall do not make two surfaces).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["support_points", "count_surfaces", "MIN_PLANE_POINTS", "MIN_ANGLE_DEG"]

F64 = npt.NDArray[np.float64]
MIN_PLANE_POINTS = 15    # points on a plane for it to count as a surface
MIN_ANGLE_DEG = 20.0     # planes turned less than this, and near each other, are one surface
_ITERATIONS = 300
_MAX_POINTS = 2000       # a fixed random subset of the pooled points beyond this (speed)
_TOL_BASE_M, _TOL_RANGE = 0.02, 0.01


def support_points(points_body: npt.ArrayLike, T_map_body: npt.ArrayLike, T_body_cam: npt.ArrayLike) -> F64:
    """(K, 4) float64: the inlier points (K, 3, match body frame) in the map frame, with their
    tolerance (metres) as the fourth column. T_body_cam: the match camera that measured them."""
    P = np.asarray(points_body, np.float64).reshape(-1, 3)
    T = np.asarray(T_map_body, np.float64)
    cam = np.asarray(T_body_cam, np.float64)[:3, 3]
    ranges = np.linalg.norm(P - cam, axis=1)
    out = np.empty((len(P), 4))
    out[:, :3] = P @ T[:3, :3].T + T[:3, 3]
    out[:, 3] = _TOL_BASE_M + _TOL_RANGE * ranges
    return out


def _plane(p: F64) -> tuple[F64, float] | None:
    n = np.cross(p[1] - p[0], p[2] - p[0])
    norm = float(np.linalg.norm(n))
    if norm < 1e-9:
        return None
    n /= norm
    return n, float(n @ p[0])


def _best_plane(pts: F64, rng: np.random.Generator) -> tuple[F64, float, npt.NDArray[np.bool_]] | None:
    """The plane with the most points within their tolerance, refitted by least squares on them."""
    best: tuple[F64, float, npt.NDArray[np.bool_]] | None = None
    for _ in range(_ITERATIONS):
        fit = _plane(pts[rng.choice(len(pts), 3, replace=False), :3])
        if fit is None:
            continue
        on = np.abs(pts[:, :3] @ fit[0] - fit[1]) <= pts[:, 3]
        if best is None or on.sum() > best[2].sum():
            best = (fit[0], fit[1], on)
    if best is None:
        return None
    centre = pts[best[2], :3].mean(axis=0)
    normal = np.linalg.svd(pts[best[2], :3] - centre)[2][2]
    return normal, float(normal @ centre), np.abs(pts[:, :3] @ normal - normal @ centre) <= pts[:, 3]


def count_surfaces(support: Sequence[F64 | None], wanted: int = 2) -> int | None:
    """Distinct planes (up to ``wanted``) that the pooled support points (each (K, 4), map frame)
    lie on, each with at least MIN_PLANE_POINTS points. None when no evidence carries points
    (single-camera poses: the rule cannot be applied)."""
    parts = [np.asarray(s, np.float64) for s in support if s is not None and len(s)]
    if not parts:
        return None
    pts = np.concatenate(parts)
    rng = np.random.default_rng(0)
    if len(pts) > _MAX_POINTS:
        pts = pts[rng.choice(len(pts), _MAX_POINTS, replace=False)]
    planes: list[tuple[F64, float, float]] = []
    while len(planes) < wanted and len(pts) >= MIN_PLANE_POINTS:
        found = _best_plane(pts, rng)
        if found is None or found[2].sum() < MIN_PLANE_POINTS:
            break
        normal, offset, on = found
        tol = float(np.median(pts[on, 3]))
        if not any(_same_plane(normal, offset, tol, other) for other in planes):
            planes.append((normal, offset, tol))
        pts = pts[~on]
    return len(planes)


def _same_plane(normal: F64, offset: float, tol: float, other: tuple[F64, float, float]) -> bool:
    cos = float(normal @ other[0])
    angle = math.degrees(math.acos(min(1.0, abs(cos))))
    if angle >= MIN_ANGLE_DEG:
        return False
    return abs(offset - math.copysign(1.0, cos) * other[1]) <= 3.0 * max(tol, other[2])
