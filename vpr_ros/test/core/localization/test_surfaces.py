"""How many planes a fix's map points span (core/localization/surfaces.py): one picture is one plane."""

from __future__ import annotations

import numpy as np
import pytest

from vpr_ros.core.localization.surfaces import MIN_PLANE_POINTS, count_surfaces, support_points


def _wall(rng, n, x=3.0, noise=0.0, y=(-1.0, 1.0), z=(0.0, 2.0)):
    """n points on the plane x = const (a wall facing a camera at the origin), in a body frame."""
    return np.stack([x + rng.normal(0, noise, n) if noise else np.full(n, x),
                     rng.uniform(*y, n), rng.uniform(*z, n)], axis=1)


def _floor(rng, n):
    return np.stack([rng.uniform(1.0, 3.0, n), rng.uniform(-1.0, 1.0, n), np.zeros(n)], axis=1)


def test_one_picture_is_one_surface_and_a_wall_with_the_floor_two():
    rng = np.random.default_rng(1)
    eye = np.eye(4)
    one = support_points(_wall(rng, 200), eye, eye)
    assert count_surfaces([one]) == 1
    floor = support_points(_floor(rng, 40), eye, eye)
    assert count_surfaces([one, floor]) == 2  # pooled over the evidence
    assert count_surfaces([np.concatenate([one, floor])]) == 2
    # a second surface needs MIN_PLANE_POINTS points: a few stray ones do not make one
    assert count_surfaces([one, floor[:MIN_PLANE_POINTS - 3]]) == 1
    scattered = support_points(rng.uniform([0.5, -2, -1], [2.5, 2, 3], (40, 3)), eye, eye)
    assert count_surfaces([one, scattered]) == 1  # nor do points strewn through a volume


def test_a_noisy_wall_and_a_parallel_wall_close_by_are_one_surface_far_away_two():
    rng = np.random.default_rng(2)
    eye = np.eye(4)
    # stereo-like noise of 1.5 cm at 3 m: within the tolerance (2 cm + 1 % of range), still one wall
    noisy = support_points(_wall(rng, 300, noise=0.015), eye, eye)
    assert count_surfaces([noisy]) == 1
    near = support_points(np.concatenate([_wall(rng, 150, 3.0), _wall(rng, 150, 3.12)]), eye, eye)
    assert count_surfaces([near]) == 1  # two faces of one wall, 12 cm apart (less than 3 tolerances)
    far = support_points(np.concatenate([_wall(rng, 150, 3.0), _wall(rng, 150, 4.0, y=(1.5, 3.0))]), eye, eye)
    assert count_surfaces([far]) == 2  # a wall and a recess 1 m behind it


def test_points_are_compared_in_the_map_frame():
    """Two keyframes that saw the same picture from different poses: one plane once both are in the map."""
    rng = np.random.default_rng(3)
    wall_map = _wall(rng, 200)  # in the map frame
    T = np.eye(4)
    c, s = np.cos(0.6), np.sin(0.6)
    T[:3, :3] = [[c, -s, 0], [s, c, 0], [0, 0, 1]]
    T[:3, 3] = [0.5, -0.4, 0.1]  # the second keyframe's body in the map
    seen_from_T = (wall_map - T[:3, 3]) @ T[:3, :3]  # the same points in that body frame
    a = support_points(wall_map, np.eye(4), np.eye(4))
    b = support_points(seen_from_T, T, np.eye(4))
    assert np.allclose(a[:, :3], b[:, :3])
    assert count_surfaces([a, b]) == 1
    # left in the body frame (the map pose ignored), the second view's points would be another plane
    wrong = support_points(seen_from_T, np.eye(4), np.eye(4))
    assert count_surfaces([a, wrong]) == 2


def test_tolerance_grows_with_range_from_the_camera_that_measured_the_points():
    T_body_cam = np.eye(4)
    T_body_cam[:3, 3] = [1.0, 0.0, 0.0]
    pts = np.array([[1.0, 0.0, 2.0], [1.0, 0.0, 10.0]])
    tol = support_points(pts, np.eye(4), T_body_cam)[:, 3]
    assert tol == pytest.approx([0.04, 0.12])


def test_no_points_means_the_rule_cannot_be_applied():
    assert count_surfaces([None, None]) is None
    assert count_surfaces([]) is None
