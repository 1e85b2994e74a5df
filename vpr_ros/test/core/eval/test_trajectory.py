"""ATE with evo, and the g2o / TUM exports read back by GTSAM and evo."""

import gtsam
import numpy as np
import pytest
from evo.tools import file_interface

from vpr_ros.cli.simulated import simulated_trajectory
from vpr_ros.core.errors import InputError
from vpr_ros.core.eval.trajectory import absolute_trajectory_error
from vpr_ros.core.geometry.pose_graph import LoopEdge, pose_graph_edges
from vpr_ros.io.trajectory_export import write_g2o, write_tum


@pytest.fixture(scope="module")
def run():
    return simulated_trajectory(30, 30, seed=1)


def _rigid(yaw, t):
    c, s = np.cos(yaw), np.sin(yaw)
    m = np.eye(4)
    m[:2, :2] = [[c, -s], [s, c]]
    m[:3, 3] = t
    return m


def test_ate_is_zero_up_to_the_alignment(run):
    gt = run.ground_truth
    moved = np.einsum("ij,njk->nik", _rigid(0.7, [5.0, -2.0, 1.0]), gt)
    assert absolute_trajectory_error(gt, gt).rmse_m == pytest.approx(0.0, abs=1e-9)
    assert absolute_trajectory_error(gt, moved).rmse_m == pytest.approx(0.0, abs=1e-6)
    # A scaled copy (monocular): SE(3) sees an error, Sim(3) removes it and reports the scale.
    scaled = moved.copy()
    scaled[:, :3, 3] *= 0.5
    se3 = absolute_trajectory_error(gt, scaled)
    sim3 = absolute_trajectory_error(gt, scaled, scale_known=False)
    assert se3.rmse_m > 1.0 and se3.alignment == "se3"
    assert sim3.rmse_m == pytest.approx(0.0, abs=1e-6) and sim3.scale == pytest.approx(2.0)


def test_ate_matches_a_direct_computation_for_a_pure_offset(run):
    gt = run.ground_truth
    rng = np.random.default_rng(0)
    noisy = gt.copy()
    noise = rng.normal(0, 0.1, (len(gt), 3))
    noise -= noise.mean(axis=0)  # zero-mean: the optimal alignment of a pure translation is identity
    noisy[:, :3, 3] += noise
    ate = absolute_trajectory_error(gt, noisy)
    # Alignment can only lower the error below the unaligned RMSE, and only a little here.
    direct = float(np.sqrt((noise ** 2).sum(axis=1).mean()))
    assert ate.rmse_m <= direct + 1e-9 and ate.rmse_m == pytest.approx(direct, rel=0.1)
    assert ate.max_m >= ate.rmse_m >= ate.mean_m * 0.99


def test_ate_refuses_mismatched_or_degenerate_input(run):
    with pytest.raises(InputError, match="same N"):
        absolute_trajectory_error(run.ground_truth, run.ground_truth[:-1])
    line = np.repeat(np.eye(4)[None], 10, axis=0)
    line[:, 0, 3] = np.arange(10)
    with pytest.raises(InputError, match="one line"):
        absolute_trajectory_error(line, line)


def test_g2o_export_loads_in_gtsam_with_the_same_poses_and_information(run, tmp_path):
    loops = [LoopEdge(30 + i, i) for i in range(0, 30, 10)]
    cov = np.diag([0.01, 0.02, 0.03, 0.004, 0.005, 0.006])
    cov[0, 1] = cov[1, 0] = 0.005  # an off-diagonal term must survive the upper-triangle layout
    loops.append(LoopEdge(55, 5, np.linalg.solve(run.ground_truth[5], run.ground_truth[55]), cov))
    edges = pose_graph_edges(run.odometry, loops)
    path = write_g2o(tmp_path / "graph.g2o", run.odometry, edges)
    graph, values = gtsam.readG2o(str(path), True)
    assert values.size() == len(run.odometry) and graph.size() == len(edges)
    for i, pose in enumerate(run.odometry):
        assert np.allclose(values.atPose3(i).matrix(), pose, atol=1e-6)
    factor = graph.at(graph.size() - 1)
    assert list(factor.keys()) == [5, 55]
    assert np.allclose(factor.measured().matrix(), edges[-1][2], atol=1e-6)
    # GTSAM orders the tangent [rx, ry, rz, x, y, z]; ours is the ROS order [x, y, z, rx, ry, rz].
    order = [3, 4, 5, 0, 1, 2]
    expected = np.linalg.inv(cov)[np.ix_(order, order)]
    assert np.allclose(factor.noiseModel().information(), expected, rtol=1e-6)


def test_tum_export_loads_in_evo(run, tmp_path):
    stamps = [1_700_000_000_000_000_000 + i * 100_000_000 for i in range(len(run.odometry))]
    path = write_tum(tmp_path / "odometry.tum", stamps, run.odometry)
    traj = file_interface.read_tum_trajectory_file(str(path))
    assert traj.num_poses == len(run.odometry)
    assert np.allclose(traj.timestamps, np.array(stamps) / 1e9, rtol=0, atol=1e-6)
    assert np.allclose(np.stack(traj.poses_se3), run.odometry, atol=1e-6)
    with pytest.raises(InputError, match="one stamp per pose"):
        write_tum(tmp_path / "bad.tum", stamps[:-1], run.odometry)
