"""Refinement of a scale-free two-view pose (core/geometry/essential_refine.py) on synthetic views."""

import cv2
import numpy as np
import pytest

from vpr_ros.core.geometry.essential_refine import cheirality, refine_essential, sampson, essential_of

FOCAL = 500.0


def _views(rng, n=200, noise_px=1.0, baseline_m=1.0):
    R = cv2.Rodrigues(np.radians([3.0, -5.0, 2.0]).reshape(3, 1))[0]
    t = np.array([0.5, 0.1, 0.2]) / np.linalg.norm([0.5, 0.1, 0.2])
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, t  # T_match_query (unit translation)
    Xq = np.c_[rng.uniform(-2, 2, (n, 2)), rng.uniform(3, 8, n)]
    Xm = Xq @ R.T + baseline_m * t
    x_q = Xq[:, :2] / Xq[:, 2:] + rng.normal(0, noise_px / FOCAL, (n, 2))
    x_m = Xm[:, :2] / Xm[:, 2:] + rng.normal(0, noise_px / FOCAL, (n, 2))
    return T, x_m, x_q


def _rot_err(A, B):
    return np.degrees(np.arccos(np.clip((np.trace(A[:3, :3].T @ B[:3, :3]) - 1) / 2, -1, 1)))


def _dir_err(A, B):
    return np.degrees(np.arccos(np.clip(A[:3, 3] @ B[:3, 3], -1, 1)))


def test_truth_has_zero_sampson_error_and_points_in_front():
    T, x_m, x_q = _views(np.random.default_rng(0), noise_px=0.0)
    assert np.abs(sampson(essential_of(T), x_m, x_q)).max() < 1e-9
    assert cheirality(T, x_m, x_q).all()


def test_refinement_reduces_the_error_of_a_perturbed_pose():
    rng = np.random.default_rng(1)
    before, after, nees = [], [], []
    for _ in range(10):
        T, x_m, x_q = _views(rng)
        start = T.copy()
        start[:3, :3] = start[:3, :3] @ cv2.Rodrigues(np.radians(rng.normal(0, 1.0, (3, 1))))[0]
        start[:3, 3] += rng.normal(0, 0.05, 3)
        start[:3, 3] /= np.linalg.norm(start[:3, 3])
        ref = refine_essential(start, x_m, x_q, np.ones(len(x_m), bool), FOCAL, 2.0)
        before.append(_rot_err(start, T) + _dir_err(start, T))
        after.append(_rot_err(ref.T_match_query, T) + _dir_err(ref.T_match_query, T))
        assert ref.inliers.mean() > 0.9 and ref.rms_px < 1.5
        assert ref.sigma_rot_deg < 0.5 and ref.sigma_dir_deg < 5.0
        # NEES over rotation + direction with the 6x6 covariance (huge variance along the scale).
        d = np.linalg.inv(ref.T_match_query) @ T
        rot = cv2.Rodrigues(d[:3, :3])[0].ravel()
        C = ref.covariance
        e = np.r_[d[:3, 3], rot]
        nees.append(float(e @ np.linalg.solve(C, e)))
    assert np.median(after) < 0.3 * np.median(before), (before, after)
    assert 1.0 < np.median(nees) < 15.0, nees


def test_outliers_are_dropped_by_the_refined_model():
    rng = np.random.default_rng(2)
    T, x_m, x_q = _views(rng)
    x_q[:40] = rng.uniform(-0.5, 0.5, (40, 2))  # a non-rigid part: no motion explains it
    start = np.arange(len(x_m)) >= 60  # a robust estimator's consensus set: part of the inliers
    ref = refine_essential(T, x_m, x_q, start, FOCAL, 2.0)
    assert ref.inliers[40:].mean() > 0.8 and ref.inliers[:40].mean() < 0.2
    assert _rot_err(ref.T_match_query, T) < 0.3


def test_pose_difference_and_widen_use_the_message_chart():
    from vpr_ros.core.geometry.essential_refine import direction_basis, widen
    from vpr_ros.core.geometry.essential_search import pose_difference
    T, x_m, x_q = _views(np.random.default_rng(4))
    assert np.allclose(pose_difference(T, T), 0)
    step = np.eye(4)
    step[:3, :3] = cv2.Rodrigues(np.array([[0.0], [0.01], [0.0]]))[0]
    assert np.allclose(pose_difference(T, T @ step)[2:], [0, 0.01, 0], atol=1e-9)  # right perturbation
    ref = refine_essential(T, x_m, x_q, np.ones(len(x_m), bool), FOCAL, 2.0)
    d = np.r_[0.02, 0.0, 0.0, 0.0, 0.01]
    wide = widen(ref, np.outer(d, d))
    u, b1, b2 = direction_basis(ref.T_match_query)
    P = np.zeros((6, 5))
    P[:3, 0], P[:3, 1], P[3:, 2:] = b1, b2, np.eye(3)
    np.testing.assert_allclose(P.T @ wide.covariance @ P - P.T @ ref.covariance @ P, np.outer(d, d), atol=1e-9)
    assert wide.covariance[:3, :3] @ u @ u == pytest.approx(ref.covariance[:3, :3] @ u @ u)  # scale stays unknown
    assert wide.sigma_rot_deg >= np.degrees(0.01) and wide.sigma_dir_deg >= np.degrees(0.02)


def test_search_finds_the_truth_and_rivals_widen_the_covariance():
    from vpr_ros.core.geometry.essential_search import pose_difference, search_essential
    T, x_m, x_q = _views(np.random.default_rng(6), n=300, noise_px=0.5, baseline_m=0.3)
    start = T.copy()
    start[:3, :3] = start[:3, :3] @ cv2.Rodrigues(np.radians([[0.5], [-0.5], [0.3]]))[0]
    found = search_essential(start, np.ones(len(x_m), bool), x_m, x_q, FOCAL, 2.0, seed=1, ambiguity_chi2=45.0)
    # Starts converge into the true valley (rivals there, if any, lie within its spread: a direction
    # sigma still far below the 5 deg bound); the homography's other poses are far worse minima.
    assert found.minima >= 2 and found.refined.sigma_dir_deg < 2.0 and found.refined.sigma_rot_deg < 0.3
    assert np.degrees(np.abs(pose_difference(found.refined.T_match_query, T))).max() < 1.0
    # Counting every other minimum as a rival (a huge bound) widens the covariance by their differences.
    every = search_essential(start, np.ones(len(x_m), bool), x_m, x_q, FOCAL, 2.0, seed=1, ambiguity_chi2=1e9)
    assert every.rivals == every.minima - 1 >= 1
    assert every.refined.sigma_rot_deg > 10 * found.refined.sigma_rot_deg
