"""The SIMULATED (RENDERED from real photographs) rooms are exact: depth lies on the planes, image
content moves between two views exactly as the known relative pose says, and it is the photographs'."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from vpr_ros.cli.rendered_rooms import (RENDERED_LABEL, RenderCamera, cast_rays, pose_from_euler, rendered_view,
                                        simulated_degradation)
from vpr_ros.cli.rendered_scenes import (CELL_PX, TEST_DATA_DIR, real_photographs, relative_truth,
                                         simulated_camera, simulated_look_alike_room, simulated_pairs,
                                         simulated_room)


@pytest.fixture(scope="module")
def room():
    return simulated_room(3)


def _pixels_and_world(view, step: int = 7):
    cam = view.camera
    v, u = np.mgrid[0:cam.height:step, 0:cam.width:step]
    px = np.stack([u.ravel(), v.ravel()], 1).astype(np.float64)
    z = view.depth[v.ravel(), u.ravel()].astype(np.float64)
    X_cam = np.c_[cam.undistort(px) * z[:, None], z]
    return px, X_cam @ view.T_world_cam[:3, :3].T + view.T_world_cam[:3, 3], view.plane[v.ravel(), u.ravel()]


@pytest.mark.parametrize("distorted", [False, True])
def test_depth_back_projects_onto_the_plane_each_pixel_sees(room, distorted):
    cam = simulated_camera(200, 150, distorted)
    view = rendered_view(room, cam, pose_from_euler([0.5, -0.2, 2.0], 30, -8, 4), supersample=1)
    assert view.label == RENDERED_LABEL and "SIMULATED" in view.label
    assert np.all(np.isfinite(view.depth)) and np.all(view.plane >= 0)  # a closed box: every ray hits
    _, X, which = _pixels_and_world(view, 3)
    for k, pl in enumerate(room.planes):
        on = which == k
        if not on.any():
            continue
        rel = X[on] - pl.origin
        assert np.abs(rel @ pl.normal).max() < 1e-5  # float32 depth: ~1e-7 relative
        s, t = rel @ pl.axis_u, rel @ pl.axis_v
        assert s.min() > -1e-4 and s.max() < pl.size_m[0] + 1e-4 and t.min() > -1e-4 and t.max() < pl.size_m[1] + 1e-4
    # the nearest plane: no other plane is hit in front of the depth
    assert len(set(which.tolist())) >= 3


def test_the_camera_model_round_trips():
    cam = simulated_camera(320, 240, distorted=True)
    px = np.random.default_rng(0).uniform([0, 0], [320, 240], (500, 2))
    np.testing.assert_allclose(cam.distort(cam.undistort(px)), px, atol=1e-7)
    xn = cam.undistort(px)
    expected = cv2.undistortPoints(px.reshape(-1, 1, 2), cam.K, cam.D,
                                   criteria=(cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-12)).reshape(-1, 2)
    np.testing.assert_allclose(xn, expected, atol=1e-6)  # the plumb_bob model the estimator undistorts with


@pytest.mark.parametrize("distorted", [False, True])
def test_points_move_between_two_views_exactly_as_the_relative_pose_says(room, distorted):
    cam = simulated_camera(320, 240, distorted)
    pair = simulated_pairs(room, cam, 1, seed=11, t_range=(0.2, 0.4), r_range=(4.0, 8.0))[0]
    a, b = (rendered_view(room, cam, T, supersample=2) for T in (pair.T_world_map, pair.T_world_query))
    T_a_b = relative_truth(pair.T_world_map, pair.T_world_query)
    np.testing.assert_allclose(T_a_b, pair.truth)
    # geometry: every pixel of view a, back-projected and projected into b, is seen by b at that depth
    px, X_world, _ = _pixels_and_world(a)
    X_b = (X_world - pair.T_world_query[:3, 3]) @ pair.T_world_query[:3, :3]
    p_b = cam.project(X_b)
    inside = (p_b[:, 0] > 0) & (p_b[:, 0] < 319) & (p_b[:, 1] > 0) & (p_b[:, 1] < 239)
    z_b, _, _, _ = cast_rays(room, pair.T_world_query, cam.undistort(p_b[inside]))
    np.testing.assert_allclose(z_b, X_b[inside, 2], rtol=1e-6)  # the depth image is float32
    # content: SIFT keypoints of view a land, by a's exact depth and the pose, on b's matched keypoints
    sift = cv2.SIFT_create(800)
    grey = [cv2.cvtColor(v.image, cv2.COLOR_RGB2GRAY) for v in (a, b)]
    (ka, da), (kb, db) = (sift.detectAndCompute(g, None) for g in grey)
    matches = [m for m, n in cv2.BFMatcher().knnMatch(da, db, k=2) if m.distance < 0.7 * n.distance]
    qa = np.array([ka[m.queryIdx].pt for m in matches])
    qb = np.array([kb[m.trainIdx].pt for m in matches])
    xn = cam.undistort(qa)
    z, _, _, _ = cast_rays(room, pair.T_world_map, xn)  # exact depth at the sub-pixel keypoint
    Xa = np.c_[xn * z[:, None], z]
    predicted = cam.project((Xa - T_a_b[:3, 3]) @ T_a_b[:3, :3])
    err = np.linalg.norm(predicted - qb, axis=1)
    good = err < 3.0  # a few ratio-test matches are wrong; the rest must agree to sub-pixel
    assert good.sum() >= 40 and good.mean() > 0.8
    assert np.median(err[good]) < 0.5


def test_image_content_comes_from_the_real_photographs(room):
    back = next(pl for pl in room.planes if pl.name == "back")
    photo = real_photographs()[back.photos[0]]
    cell = back.texture[:CELL_PX, :CELL_PX]
    resized = cv2.resize(photo, (CELL_PX, CELL_PX), interpolation=cv2.INTER_AREA if photo.shape[0] > CELL_PX
                         else cv2.INTER_CUBIC)
    np.testing.assert_array_equal(cell, resized)
    # a camera square in front of the first photograph's centre sees its middle 3 m x 2.25 m
    cam = RenderCamera(np.array([[100.0, 0, 79.5], [0, 100.0, 59.5], [0, 0, 1]]), np.zeros(5), 160, 120)
    view = rendered_view(room, cam, pose_from_euler([-1.5, 0.0, 8.0 - 100.0 * 3.0 / 160.0]), supersample=2)
    expected = cv2.resize(cell[75:525], (160, 120), interpolation=cv2.INTER_AREA)
    corr = np.corrcoef(view.image.astype(float).ravel(), expected.astype(float).ravel())[0, 1]
    assert corr > 0.97
    assert (TEST_DATA_DIR / back.photos[0]).exists() or back.photos[0].startswith("corridor/")


def test_a_look_alike_room_rearranges_the_same_photographs(room):
    other = simulated_look_alike_room(room, 5)
    for a, b in zip(room.planes, other.planes):
        assert a.photos == b.photos and a.texture.shape == b.texture.shape
        assert np.mean(a.texture != b.texture) > 0.5
        # each cell holds the same pixels, scrolled
        np.testing.assert_array_equal(np.sort(a.texture[:CELL_PX, :CELL_PX].ravel()),
                                      np.sort(b.texture[:CELL_PX, :CELL_PX].ravel()))
    pair = simulated_pairs(room, simulated_camera(160, 120), 1, 2, look_alike=other)[0]
    assert pair.kind == "look-alike" and pair.truth is None and pair.label == RENDERED_LABEL


def test_degradations_blur_darken_and_add_noise(room):
    view = rendered_view(room, simulated_camera(160, 120), pose_from_euler([0, 0, 2.0]), supersample=1)
    rng = np.random.default_rng(0)
    sharp = cv2.Laplacian(cv2.cvtColor(view.image, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var()
    for kw in ({"motion_blur_px": 15.0, "motion_angle_deg": 30.0}, {"defocus_px": 5.0}):
        blurred = simulated_degradation(view.image, rng, **kw)
        assert cv2.Laplacian(cv2.cvtColor(blurred, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var() < 0.3 * sharp
    dark = simulated_degradation(view.image, rng, gain=0.5)
    assert abs(dark.mean() - 0.5 * view.image.mean()) < 1.0
    noisy = simulated_degradation(np.full((100, 100, 3), 100, np.uint8), rng, read_noise=3.0, shot_noise=0.25)
    assert noisy.std() == pytest.approx(np.sqrt(9 + 25), rel=0.1)
