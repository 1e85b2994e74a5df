"""The map-pose math of relocalisation, checked by sampling: composition of a map pose (ROS covariance)
with a relative pose (right covariance), the right <-> ROS conversion, the base <- camera change of
frames with the adjoint, and the ``frames.base_from_camera`` parameter."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from vpr_ros.core.config import config_from_flat
from vpr_ros.core.errors import ConfigError
from vpr_ros.core.localization.map_pose import (base_from_camera_matrix, camera_to_base, change_child,
                                                compose_map_pose, pose_from_xyz_quat, right_from_ros,
                                                ros_from_right, sigmas, xyz_quat)

N = 40_000


def _pose(rng, scale_m=2.0):
    T = np.eye(4)
    T[:3, :3] = Rotation.from_rotvec(rng.normal(size=3) * 0.8).as_matrix()
    T[:3, 3] = rng.normal(size=3) * scale_m
    return T


def _cov(rng, sigma_m, sigma_rad):
    A = rng.normal(size=(6, 6)) * 0.3 + np.eye(6)
    C = A @ A.T
    d = np.sqrt(np.diag(C))
    C = C / np.outer(d, d)  # a correlation matrix, then the sigmas
    s = np.array([sigma_m] * 3 + [sigma_rad] * 3)
    return C * np.outer(s, s)


def _right(T, d):
    """T * exp(d), d (N, 6) = (rho, phi) to first order: rotation Exp(phi), translation rho."""
    R = T[:3, :3] @ Rotation.from_rotvec(d[:, 3:]).as_matrix()
    p = T[:3, 3] + d[:, :3] @ T[:3, :3].T
    return R, p


def _ros_error(R, p, T):
    """ROS-convention errors of samples (R (N, 3, 3), p (N, 3)) about T: (p - p_T, rotvec(R R_T^T))."""
    return np.c_[p - T[:3, 3], Rotation.from_matrix(R @ T[:3, :3].T).as_rotvec()]


def _close(sample, predicted, tol=0.05):
    err = np.linalg.norm(sample - predicted) / np.linalg.norm(predicted)
    assert err < tol, (err, np.sqrt(np.diag(sample)), np.sqrt(np.diag(predicted)))


def test_composition_covariance_matches_sampling():
    rng = np.random.default_rng(0)
    T_m, T_r = _pose(rng, 5.0), _pose(rng, 1.5)
    cov_m, cov_r = _cov(rng, 0.05, 0.03), _cov(rng, 0.02, 0.02)
    T_q, cov_q = compose_map_pose(T_m, cov_m, T_r, cov_r)
    np.testing.assert_allclose(T_q, T_m @ T_r)
    a = rng.multivariate_normal(np.zeros(6), cov_m, N)
    R_m = Rotation.from_rotvec(a[:, 3:]).as_matrix() @ T_m[:3, :3]  # ROS: R = Exp(dtheta) R_est
    p_m = T_m[:3, 3] + a[:, :3]
    R_r, p_r = _right(T_r, rng.multivariate_normal(np.zeros(6), cov_r, N))
    R_q = R_m @ R_r
    p_q = p_m + np.einsum("nij,nj->ni", R_m, p_r)
    sample = np.cov(_ros_error(R_q, p_q, T_q).T)
    _close(sample, cov_q)
    # the test sees a Jacobian without the lever arm of the map pose's rotation error (J_m = I)
    Jr = np.kron(np.eye(2), T_q[:3, :3])
    no_lever = cov_m + Jr @ cov_r @ Jr.T
    assert np.linalg.norm(sample - no_lever) / np.linalg.norm(sample) > 0.3


def test_right_and_ros_conventions_convert_both_ways():
    rng = np.random.default_rng(1)
    T, cov_r = _pose(rng), _cov(rng, 0.04, 0.05)
    R, p = _right(T, rng.multivariate_normal(np.zeros(6), cov_r, N))
    cov_ros = ros_from_right(T, cov_r)
    _close(np.cov(_ros_error(R, p, T).T), cov_ros)
    np.testing.assert_allclose(right_from_ros(T, cov_ros), cov_r, atol=1e-15)
    assert not np.allclose(cov_ros, cov_r)  # the rotation matters


def test_change_child_moves_the_right_covariance_with_the_adjoint():
    rng = np.random.default_rng(2)
    T_ab, T_bc, cov = _pose(rng), _pose(rng, 0.5), _cov(rng, 0.03, 0.04)
    T_ac, cov_c = change_child(T_ab, cov, T_bc)
    np.testing.assert_allclose(T_ac, T_ab @ T_bc)
    R, p = _right(T_ab, rng.multivariate_normal(np.zeros(6), cov, N))
    R_c = R @ T_bc[:3, :3]
    p_c = p + R @ T_bc[:3, 3]
    err = np.linalg.inv(T_ac)  # right error in frame c: inv(T_ac) * sample
    rho = (p_c - T_ac[:3, 3]) @ T_ac[:3, :3]
    phi = Rotation.from_matrix(np.einsum("ij,njk->nik", err[:3, :3], R_c)).as_rotvec()
    _close(np.cov(np.c_[rho, phi].T), cov_c)


def test_camera_to_base_conjugates_and_round_trips():
    rng = np.random.default_rng(3)
    T_c, B, cov = _pose(rng, 1.0), _pose(rng, 0.3), _cov(rng, 0.02, 0.03)
    T_b, cov_b = camera_to_base(T_c, cov, B)
    np.testing.assert_allclose(T_b, B @ T_c @ np.linalg.inv(B), atol=1e-12)
    back, cov_back = camera_to_base(T_b, cov_b, np.linalg.inv(B))
    np.testing.assert_allclose(back, T_c, atol=1e-12)
    np.testing.assert_allclose(cov_back, cov, atol=1e-14)
    assert camera_to_base(T_c, None, B)[1] is None
    # sampled: base poses of perturbed camera poses, their right error in the base frame
    R, p = _right(T_c, rng.multivariate_normal(np.zeros(6), cov, N))
    Binv = np.linalg.inv(B)
    R_b = B[:3, :3] @ R @ Binv[:3, :3]
    p_b = (np.einsum("nij,j->ni", R, Binv[:3, 3]) + p) @ B[:3, :3].T + B[:3, 3]
    rho = (p_b - T_b[:3, 3]) @ T_b[:3, :3]
    phi = Rotation.from_matrix(np.einsum("ji,njk->nik", T_b[:3, :3], R_b)).as_rotvec()
    _close(np.cov(np.c_[rho, phi].T), cov_b)


def test_base_from_camera_parameter():
    frames = config_from_flat({"frames.base_from_camera": "0.2, 0, 0.4, -0.5, 0.5, -0.5, 0.5"}).frames
    B = base_from_camera_matrix(frames)
    np.testing.assert_allclose(B[:3, 3], [0.2, 0.0, 0.4])
    np.testing.assert_allclose(B[:3, :3] @ [0, 0, 1], [1, 0, 0], atol=1e-12)  # optical z looks along base x
    np.testing.assert_allclose(B[:3, :3] @ [1, 0, 0], [0, -1, 0], atol=1e-12)  # image right is base -y
    np.testing.assert_allclose(base_from_camera_matrix(config_from_flat({}).frames), np.eye(4))
    p, q = xyz_quat(B)
    np.testing.assert_allclose(pose_from_xyz_quat([*p, *q]), B, atol=1e-12)
    for bad, says in (("1 2 3", "not 7"), ("0 0 0 0 0 0 2", "norm"), ("0 0 nan 0 0 0 1", "NaN"),
                      ("a b c d e f g", "not a list of numbers")):
        with pytest.raises(ConfigError, match=f"frames.base_from_camera.*{says}"):
            config_from_flat({"frames.base_from_camera": bad})


def test_sigmas_are_the_largest_axis():
    cov = np.diag([0.01, 0.04, 0.0001, 1e-4, 4e-4, 1e-6])
    assert sigmas(cov) == pytest.approx((0.2, 0.02))
