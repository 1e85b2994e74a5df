"""Pose graph with GTSAM on the SIMULATED two-lap corridor: drift corrected, wrong loops survived."""

import math

import numpy as np
import pytest

from vpr_ros.cli.simulated import simulated_trajectory
from vpr_ros.core.errors import ConfigError, InputError
from vpr_ros.core.eval.trajectory import absolute_trajectory_error
from vpr_ros.core.geometry.pose_graph import LoopEdge, PoseGraphOptions, optimize_pose_graph, pose_graph_edges

N = 111  # frames per lap, as in the Corridor; each optimisation takes milliseconds


@pytest.fixture(scope="module")
def run():
    return simulated_trajectory(N, N, seed=0)


def _true_loops(step=1):
    return [LoopEdge(N + i, i) for i in range(0, N, step)]


def _wrong_loops(fraction, seed=7):
    """Loops between places at least 10 m apart (what an aliased corridor produces)."""
    rng = np.random.default_rng(seed)
    count = max(1, round(fraction * N))
    pairs = []
    while len(pairs) < count:
        q, m = int(rng.integers(0, N)), int(rng.integers(0, N))
        if abs(q - m) >= 10:
            pairs.append(LoopEdge(N + q, m))
    return pairs


def _ate(run, poses):
    return absolute_trajectory_error(run.ground_truth, poses).rmse_m


def test_simulated_odometry_drifts_and_lap2_revisits_lap1(run):
    assert run.label == "simulated" and run.ground_truth.shape == run.odometry.shape == (2 * N, 4, 4)
    # Query frame i is at reference frame i's place (a quarter metre across the corridor).
    gap = np.linalg.norm(run.ground_truth[N:, :3, 3] - run.ground_truth[:N, :3, 3], axis=1)
    assert np.allclose(gap, 0.25)
    assert _ate(run, run.odometry) > 1.0  # the odometry has drifted
    again = simulated_trajectory(N, N, seed=0)
    assert np.array_equal(again.odometry, run.odometry)  # seeded


def test_loops_correct_the_drift_to_a_third(run):
    before = _ate(run, run.odometry)
    result = optimize_pose_graph(run.odometry, _true_loops())
    after = _ate(run, result.poses)
    assert after <= before / 3, (before, after)
    assert result.final_error < result.initial_error and result.loops_rejected == 0
    # The first keyframe is held by the prior.
    assert np.allclose(result.poses[0], run.odometry[0], atol=1e-5)


@pytest.mark.parametrize("robust", ["gnc", "cauchy"])
def test_ten_percent_wrong_loops_do_not_wreck_the_map(run, robust):
    options = PoseGraphOptions(robust=robust)
    clean = _ate(run, optimize_pose_graph(run.odometry, _true_loops(), options).poses)
    wrong = _wrong_loops(0.10)
    result = optimize_pose_graph(run.odometry, _true_loops() + wrong, options)
    assert _ate(run, result.poses) <= 1.5 * clean
    # The wrong loops (the last ones) are the ones turned down.
    assert np.all(result.loop_weights[-len(wrong):] < 0.5)
    assert np.mean(result.loop_weights[:N] >= 0.5) >= 0.9


def test_without_a_robust_method_the_same_wrong_loops_wreck_it(run):
    # Shows the test above has teeth: plain least squares is pulled far off by the same loops.
    options = PoseGraphOptions(robust="none")
    clean = _ate(run, optimize_pose_graph(run.odometry, _true_loops(), options).poses)
    wrecked = _ate(run, optimize_pose_graph(run.odometry, _true_loops() + _wrong_loops(0.10), options).poses)
    assert wrecked > 3 * clean


def test_measured_relative_poses_are_used_and_unknown_scale_leaves_translation_to_odometry(run):
    gt = run.ground_truth
    measured = [LoopEdge(N + i, i, np.linalg.solve(gt[i], gt[N + i]), np.eye(6) * 1e-4)
                for i in range(0, N, 5)]
    precise = _ate(run, optimize_pose_graph(run.odometry, measured).poses)
    same_place = _ate(run, optimize_pose_graph(run.odometry, _true_loops(5)).poses)
    assert precise < same_place  # a measured transform beats "same place, give or take 1.5 m"
    # A monocular loop with a 50x wrong scale: harmless when flagged, harmful when trusted.
    bad_scale = []
    for e in measured:
        rel = e.relative_pose.copy()
        rel[:3, 3] = rel[:3, 3] * 50 + [0.0, 20.0, 0.0]
        bad_scale.append(LoopEdge(e.query, e.match, rel, e.covariance, translation_scale_known=False))
    flagged = optimize_pose_graph(run.odometry, bad_scale, PoseGraphOptions(robust="none")).poses
    trusted = optimize_pose_graph(run.odometry, [LoopEdge(e.query, e.match, e.relative_pose, e.covariance)
                                                 for e in bad_scale], PoseGraphOptions(robust="none")).poses
    assert _ate(run, flagged) < _ate(run, trusted) / 3


def test_edges_and_errors(run):
    edges = pose_graph_edges(run.odometry, _true_loops(10))
    assert len(edges) == 2 * N - 1 + 12
    i, j, rel, cov = edges[-1]
    assert (i, j) == (110, N + 110) and np.array_equal(rel, np.eye(4))
    assert cov[0, 0] == pytest.approx(1.5 ** 2) and cov[5, 5] == pytest.approx(math.radians(10) ** 2)
    with pytest.raises(InputError, match="does not join"):
        optimize_pose_graph(run.odometry, [LoopEdge(3, 3)])
    with pytest.raises(InputError, match="finite"):
        optimize_pose_graph(np.full((3, 4, 4), np.nan), [])
    with pytest.raises(ConfigError, match="gnc"):
        PoseGraphOptions(robust="tukey")
