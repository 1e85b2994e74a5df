"""Loops as backend edges (core.geometry.backend_edges / backend_nodes), checked without ROS.

Covariance propagation is checked against numerical Jacobians through GTSAM's Pose3 exponential and
logarithm (an implementation independent of the adjoint formulas under test): a perturbation d of
our loop (right, in the query body frame, translation first) moves the backend's edge by e = J d,
so the edge covariance must be J C J^T.
"""

from __future__ import annotations

import gtsam
import numpy as np
import pytest

from vpr_ros.core.geometry.backend_edges import (change_body_frame, compose_edge, information_matrix,
                                                 invert_edge, reorder_covariance, transform_from_xyz_quat)
from vpr_ros.core.geometry.backend_nodes import (LinkConfirmations, SeparationGate, StampedNode, StampIndex,
                                                 edge_between_nodes, robot_index, stamp_gap)

ROS_TO_GTSAM = [3, 4, 5, 0, 1, 2]


def exp_ros(d):
    """SE(3) exponential of a translation-first tangent vector, (4, 4)."""
    return gtsam.Pose3.Expmap(np.asarray(d, float)[ROS_TO_GTSAM]).matrix()


def log_ros(T):
    return gtsam.Pose3.Logmap(gtsam.Pose3(np.asarray(T, float)))[[3, 4, 5, 0, 1, 2]]


def random_pose(rng, scale=2.0):
    return exp_ros(np.concatenate([rng.normal(0, scale, 3), rng.normal(0, 0.8, 3)]))


def random_cov(rng):
    A = rng.normal(size=(6, 6)) * np.array([0.05] * 3 + [0.01] * 3)
    return A @ A.T + np.diag([1e-4] * 3 + [1e-5] * 3)


def numeric_jacobian(edge_of):
    """J with edge_of(exp(d)) = edge_of(I) exp(J d) to first order (d right perturbation of the loop)."""
    base = edge_of(np.eye(4))
    J = np.zeros((6, 6))
    h = 1e-6
    for i in range(6):
        d = np.zeros(6)
        d[i] = h
        J[:, i] = (log_ros(np.linalg.inv(base) @ edge_of(exp_ros(d))) -
                   log_ros(np.linalg.inv(base) @ edge_of(exp_ros(-d)))) / (2 * h)
    return J


@pytest.fixture
def rng():
    return np.random.default_rng(22)


def test_body_frame_change_gives_the_pose_between_the_bases_and_its_covariance(rng):
    world_body_q, world_body_m, X = random_pose(rng), random_pose(rng), random_pose(rng, 0.3)
    T_cam = np.linalg.inv(world_body_m) @ world_body_q
    C = random_cov(rng)
    T, cov = change_body_frame(T_cam, C, X)
    world_base_q, world_base_m = world_body_q @ np.linalg.inv(X), world_body_m @ np.linalg.inv(X)
    np.testing.assert_allclose(T, np.linalg.inv(world_base_m) @ world_base_q, atol=1e-9)
    J = numeric_jacobian(lambda E: change_body_frame(T_cam @ E, None, X)[0])
    np.testing.assert_allclose(cov, J @ C @ J.T, rtol=1e-5, atol=1e-12)


def test_inverted_edge_covariance_is_that_of_the_reverse_transform(rng):
    T, C = random_pose(rng), random_cov(rng)
    T_inv, cov = invert_edge(T, C)
    np.testing.assert_allclose(T_inv @ T, np.eye(4), atol=1e-9)
    J = numeric_jacobian(lambda E: np.linalg.inv(T @ E))
    np.testing.assert_allclose(cov, J @ C @ J.T, rtol=1e-5, atol=1e-12)
    # the identity guard: the reverse edge's covariance differs from the forward one for a real pose
    assert not np.allclose(cov, C, rtol=1e-2)


def test_edge_between_nodes_is_the_pose_of_the_match_node_in_the_query_node(rng):
    # Odometry is exact here: keyframes and nodes are poses of one trajectory at different stamps.
    kf_q, kf_m, node_q, node_m = (random_pose(rng) for _ in range(4))
    T_mq = np.linalg.inv(kf_m) @ kf_q
    C = random_cov(rng)
    gap_q = stamp_gap(StampedNode(1, 0, node_q), kf_q)
    gap_m = stamp_gap(StampedNode(2, 0, node_m), kf_m)
    T, cov = edge_between_nodes(T_mq, C, gap_q, gap_m)
    np.testing.assert_allclose(T, np.linalg.inv(node_q) @ node_m, atol=1e-9)
    J = numeric_jacobian(lambda E: edge_between_nodes(T_mq @ E, None, gap_q, gap_m)[0])
    np.testing.assert_allclose(cov, J @ C @ J.T, rtol=1e-5, atol=1e-12)
    assert stamp_gap(StampedNode(1, 0, None), kf_q) is None
    T0, _ = edge_between_nodes(T_mq, C)  # no odometry: the keyframes' own transform, reversed
    np.testing.assert_allclose(T0, np.linalg.inv(T_mq), atol=1e-9)


def test_compose_edge_keeps_the_outer_transforms_exact(rng):
    A, T, B, C = random_pose(rng), random_pose(rng), random_pose(rng), random_cov(rng)
    out, cov = compose_edge(A, T, C, B)
    J = numeric_jacobian(lambda E: A @ T @ E @ B)
    np.testing.assert_allclose(out, A @ T @ B, atol=1e-9)
    np.testing.assert_allclose(cov, J @ C @ J.T, rtol=1e-5, atol=1e-12)


def test_information_is_the_inverse_in_the_same_order_and_singular_ones_are_clamped(rng):
    C = np.diag([0.01, 0.04, 0.09, 1e-4, 4e-4, 9e-4])
    info, clamped = information_matrix(C)
    assert not clamped
    np.testing.assert_allclose(np.diag(info), [100, 25, 1 / 0.09, 1e4, 2500, 1 / 9e-4], rtol=1e-9)
    full = random_cov(rng)
    np.testing.assert_allclose(information_matrix(full)[0] @ full, np.eye(6), atol=1e-6)
    singular = np.diag([0.01, 0.01, 0.0, 1e-4, 1e-4, 1e-4])  # z unobserved
    info, clamped = information_matrix(singular, min_sigma_m=0.001)
    assert clamped and np.all(np.isfinite(info)) and info[2, 2] == pytest.approx(1e6, rel=1e-6)
    assert np.all(np.linalg.eigvalsh(info) > 0)
    overconfident = np.diag([0.01] * 3 + [1e-8] * 3)  # 0.1 mrad claimed: floored at 10 mrad
    info, clamped = information_matrix(overconfident, min_sigma_m=0.001, min_sigma_rad=0.01)
    assert clamped and info[5, 5] == pytest.approx(1e4, rel=1e-6) and info[0, 0] == pytest.approx(100)
    with pytest.raises(ValueError, match="NaN"):
        information_matrix(np.full((6, 6), np.nan))


def test_reorder_puts_rotation_first_for_gtsam():
    C = np.arange(36, dtype=float).reshape(6, 6)
    R = reorder_covariance(C, "rotation_first")
    assert R[0, 0] == C[3, 3] and R[3, 3] == C[0, 0] and R[0, 3] == C[3, 0]
    np.testing.assert_array_equal(reorder_covariance(C, "translation_first"), C)
    with pytest.raises(ValueError, match="rotation_first"):
        reorder_covariance(C, "xyz")


def test_transform_parameter_parsing():
    T = transform_from_xyz_quat([1, 2, 3, 0, 0, np.sin(np.pi / 4), np.cos(np.pi / 4)])
    np.testing.assert_allclose(T[:3, 3], [1, 2, 3])
    np.testing.assert_allclose(T[:3, :3] @ [1, 0, 0], [0, 1, 0], atol=1e-12)
    for bad in ([0] * 6, [0] * 7, [0, 0, 0, 0, 0, 0, np.nan]):
        with pytest.raises(ValueError):
            transform_from_xyz_quat(bad)


def test_stamp_index_takes_the_nearest_node_within_the_tolerance():
    index = StampIndex()
    for node_id, stamp in ((1, 1_000), (2, 2_000), (3, 3_000)):
        index.add(StampedNode(node_id, stamp))
    assert index.nearest(2_400, 500).node_id == 2
    assert index.nearest(2_600, 500).node_id == 3
    assert index.nearest(2_500, 500).node_id == 2  # a tie goes to the earlier node
    assert index.nearest(4_000, 500) is None and index.nearest(0, 999) is None
    index.add(StampedNode(2, 5_000))  # RTAB-Map resent node 2 with another stamp: replaced
    assert len(index) == 3 and index.nearest(2_000, 100) is None and index.nearest(5_000, 0).node_id == 2


def test_links_are_accepted_when_a_graph_holds_them_in_either_direction_and_rejected_after_n():
    links = LinkConfirmations(graphs=2)
    links.sent(10, 3)
    links.sent(11, 4)
    assert links.graph([(1, 2)]) == ([], [])
    assert links.graph([(3, 10)]) == ([(3, 10)], [(4, 11)])
    assert links.pending == 0
    with pytest.raises(ValueError):
        LinkConfirmations(graphs=0)


def test_robot_indices():
    assert robot_index("robot2", []) == 2 and robot_index("7", []) == 7 and robot_index("alpha", []) is None
    assert robot_index("alpha", ["beta", "alpha"]) == 1 and robot_index("robot2", ["robot1"]) is None


def test_lio_sam_gate_enforces_the_separation_and_sends_a_pair_once():
    gate = SeparationGate(min_separation_sec=30.0)
    assert gate.check(50_000_000_000, 10_000_000_000) is None
    assert gate.check(50_000_000_000, 10_000_000_000) == "duplicate"
    assert gate.check(50_000_000_000, 25_000_000_000) == "too_close_in_time"
    assert gate.check(40_000_000_000, 10_000_000_000) is None  # exactly 30 s is enough
