"""The measuring instrument's NEES: errors drawn from a known covariance, in LoopClosure.msg's
convention (T_true = T_est * exp(delta), query frame, translation first), give mean NEES = DoF."""

from __future__ import annotations

import numpy as np
import pytest

from vpr_ros.cli.bench.geometry_rendered import summarise
from vpr_ros.cli.bench.pose_consistency import (CHI2_95, apply_error_5, direction_basis, direction_error_deg,
                                                error_5, nees_5, nees_6, nees_summary, pose_error_6,
                                                rotation_error_deg, se3_exp, se3_log)

N = 3000  # std of the mean NEES: sqrt(2 dof / N) ~ 0.06


def _random_pose(rng: np.random.Generator, scale: float = 1.0) -> np.ndarray:
    return se3_exp(np.r_[rng.normal(size=3) * scale, rng.normal(size=3) * 0.4])


def _spd(rng: np.random.Generator, stds: np.ndarray) -> np.ndarray:
    """A full (correlated) covariance with roughly these standard deviations."""
    A = rng.normal(size=(len(stds), len(stds)))
    corr = A @ A.T + len(stds) * np.eye(len(stds))
    d = np.sqrt(np.diag(corr))
    return (corr / np.outer(d, d)) * np.outer(stds, stds)


def test_se3_log_inverts_exp_and_small_errors_are_the_first_order_chart():
    rng = np.random.default_rng(0)
    for _ in range(20):
        d = np.r_[rng.normal(size=3), rng.normal(size=3) * 0.5]
        np.testing.assert_allclose(se3_log(se3_exp(d)), d, atol=1e-9)
    T = _random_pose(rng)
    step = np.eye(4)
    step[:3, 3] = [0.003, -0.002, 0.001]
    step[:3, :3] = se3_exp([0, 0, 0, 1e-3, -5e-4, 2e-4])[:3, :3]
    # the estimator's chart (translation added, rotation by Rodrigues) agrees to second order
    np.testing.assert_allclose(pose_error_6(T, T @ step), [0.003, -0.002, 0.001, 1e-3, -5e-4, 2e-4], atol=5e-6)


@pytest.mark.parametrize("seed", [1, 2])
def test_metric_nees_of_errors_drawn_from_the_covariance_is_chi2_6(seed):
    rng = np.random.default_rng(seed)
    C = _spd(rng, np.array([0.002, 0.003, 0.001, 4e-4, 6e-4, 3e-4]))
    L = np.linalg.cholesky(C)
    values = []
    for _ in range(N):
        T_est = _random_pose(rng)
        T_true = T_est @ se3_exp(L @ rng.normal(size=6))
        values.append(nees_6(T_est, T_true, C))
    s = nees_summary(values, 6)
    assert s["mean"] == pytest.approx(6.0, abs=0.25) and s["inside_95"] == pytest.approx(0.95, abs=0.015)
    # the instrument sees an overconfident covariance: half the sigmas -> 4x the NEES
    assert np.mean([nees_6(T, T @ se3_exp(L @ rng.normal(size=6)), C / 4) for T in
                    (_random_pose(rng) for _ in range(500))]) == pytest.approx(24.0, rel=0.1)
    # and a covariance in GTSAM's rotation-first order read as the message's is far off
    swap = [3, 4, 5, 0, 1, 2]
    assert np.mean([nees_6(T, T @ se3_exp(L @ rng.normal(size=6)), C[swap][:, swap]) for T in
                    (_random_pose(rng) for _ in range(300))]) > 30


def test_single_camera_nees_of_errors_drawn_from_the_covariance_is_chi2_5():
    rng = np.random.default_rng(3)
    C5 = _spd(rng, np.array([0.02, 0.03, 2e-3, 3e-3, 1e-3]))  # direction rad, rotation rad
    L = np.linalg.cholesky(C5)
    values = []
    for _ in range(N):
        T_est = _random_pose(rng)
        T_est[:3, 3] /= np.linalg.norm(T_est[:3, 3])  # a unit direction, as the message carries it
        u, b1, b2 = direction_basis(T_est)
        P = np.zeros((6, 5))
        P[:3, 0], P[:3, 1], P[3:, 2:] = b1, b2, np.eye(3)
        C6 = P @ C5 @ P.T + 1e6 * np.outer(np.r_[u, 0, 0, 0], np.r_[u, 0, 0, 0])  # the message's layout
        e = L @ rng.normal(size=5)
        T_true = apply_error_5(T_est, e)
        np.testing.assert_allclose(error_5(T_est, T_true), e, atol=1e-9)
        T_true[:3, 3] *= rng.uniform(0.1, 10.0)  # the scale is the gauge: any length
        values.append(nees_5(T_est, T_true, C6))
    s = nees_summary(values, 5)
    assert s["mean"] == pytest.approx(5.0, abs=0.25) and s["inside_95"] == pytest.approx(0.95, abs=0.015)


def test_errors_in_degrees_and_metres():
    T = np.eye(4)
    T[:3, 3] = [1.0, 0, 0]
    T2 = se3_exp([0, 0, 0, 0, np.radians(10), 0])
    T2[:3, 3] = [np.cos(np.radians(30)), np.sin(np.radians(30)), 0]
    assert rotation_error_deg(T, T2) == pytest.approx(10.0)
    assert direction_error_deg(T, T2) == pytest.approx(30.0)
    assert CHI2_95[6] == pytest.approx(12.5916, abs=1e-4) and CHI2_95[5] == pytest.approx(11.0705, abs=1e-4)


def test_summary_counts_large_errors_blurred_and_look_alikes():
    rows = [{"kind": "offset", "valid": True, "metric": True, "inliers": 300, "rejection": "", "rot_err_deg": 0.05,
             "trans_err_m": 0.004, "nees": 5.0, "sigma_rot_deg": 0.01},
            {"kind": "blurred", "valid": True, "metric": True, "inliers": 21, "rejection": "", "rot_err_deg": 1.5,
             "trans_err_m": 0.08, "nees": 40.0, "sigma_rot_deg": 0.1},
            {"kind": "offset", "valid": False, "metric": True, "inliers": 3, "rejection": "too_few_inliers"},
            {"kind": "look-alike", "valid": True, "metric": True, "inliers": 60, "rejection": "", "sigma_rot_deg": 0.2}]
    s = summarise(rows, queries=4, metric=True)
    assert (s["loops"], s["valid"], s["large_errors"]) == (3, 2, 1)
    assert s["rejected"] == {"too_few_inliers": 1}
    assert s["nees"]["mean"] == pytest.approx(22.5) and s["nees"]["inside_95"] == pytest.approx(0.5)
    assert s["blurred"]["valid"] == 1 and s["look_alike"] == {"loops": 1, "valid": 1, "valid_inliers": [60],
                                                              "valid_sigma_rot_deg": [0.2]}
