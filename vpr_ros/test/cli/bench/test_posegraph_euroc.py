"""The ``euroc`` stream of ``vpr-ros bench posegraph --live``: the real EuRoC V1_02 trajectory from the
packaged file, SIMULATED drift and loops (``cli/bench/posegraph_euroc.py``)."""

from __future__ import annotations

import argparse
import math

import numpy as np
import pytest

from vpr_ros.cli.bench.posegraph_euroc import euroc_file, euroc_ground_truth, euroc_keyframes, euroc_stream
from vpr_ros.core.config.pose_graph import PoseGraphConfig
from vpr_ros.core.errors import InputError
from vpr_ros.core.eval.trajectory import absolute_trajectory_error
from vpr_ros.core.geometry.live_pose_graph import pose_graph_options
from vpr_ros.core.geometry.pose_graph import LoopEdge, optimize_pose_graph
from vpr_ros.core.keyframes import rotation_angle


@pytest.fixture(scope="module")
def stream():
    return euroc_stream(0.1, 0)


def test_packaged_file_is_the_10hz_euroc_trajectory():
    t, poses = euroc_ground_truth()
    assert euroc_file().parent.name == "euroc_v102" and (euroc_file().parent / "README.md").is_file()
    assert len(t) == 836 and abs(t[-1] - 83.5) < 0.01 and np.allclose(np.diff(t), 0.1, atol=1e-3)
    rot = poses[:, :3, :3]
    assert np.allclose(rot @ rot.transpose(0, 2, 1), np.eye(3), atol=1e-5)
    # the base frame is z up: the MAV flies roughly level (the IMU's x axis is up)
    assert np.median(rot[:, 2, 2]) > 0.8


def test_keyframes_follow_the_nodes_default_rule_on_a_real_3d_trajectory(stream):
    gt = stream.ground_truth
    assert len(gt) == 162
    span = np.ptp(gt[:, :3, 3], axis=0)
    assert span[0] > 3.5 and span[1] > 4.0 and span[2] > 1.0  # not planar: the MAV climbs 1.2 m
    for a, b in zip(gt[:-1], gt[1:]):
        rel = np.linalg.solve(a, b)
        assert np.linalg.norm(rel[:3, 3]) >= 0.5 or math.degrees(rotation_angle(rel[:3, :3])) >= 15.0


def test_drift_is_applied_and_grows(stream):
    gt, odom = stream.ground_truth, stream.odometry
    assert np.allclose(odom[0], gt[0])
    err = np.linalg.norm(odom[:, :3, 3] - gt[:, :3, 3], axis=1)
    n = len(err)
    assert err[n // 2:].mean() > 0.1 and err[n // 2:].mean() > 2 * err[: n // 10].mean()


def test_loops_join_only_truly_close_keyframes_and_wrong_ones_are_far(stream):
    gt = stream.ground_truth
    t_all, poses = euroc_ground_truth()
    keep = euroc_keyframes(poses)
    assert np.allclose(poses[keep], gt)
    t = t_all[keep]
    assert "real" in stream.label and "SIMULATED" in stream.label and "EuRoC" in stream.label
    assert len(stream.loops) >= 40 and len(stream.wrong) == round(0.1 * len(stream.loops))
    sigma_m, sigma_r = 0.01, math.radians(0.25)  # the documented rules: 1 m, 30 deg, 20 s; 1 cm, 0.25 deg; 2.5 m
    for q, m, rel, cov in stream.loops:
        true = np.linalg.solve(gt[m], gt[q])
        assert t[q] - t[m] >= 20.0 and np.linalg.norm(true[:3, 3]) < 1.0
        assert math.degrees(rotation_angle(true[:3, :3])) < 30.0
        err = np.linalg.solve(true, rel)  # the seeded noise, within 5 sigma of the stated covariance
        assert np.linalg.norm(err[:3, 3]) < 5 * sigma_m and rotation_angle(err[:3, :3]) < 5 * sigma_r
        assert np.allclose(np.diag(cov), [sigma_m ** 2] * 3 + [sigma_r ** 2] * 3)
    for q, m, _, _ in stream.wrong:
        assert np.linalg.norm(gt[q, :3, 3] - gt[m, :3, 3]) >= 2.5


def test_one_optimisation_reduces_ate_and_wrong_loops_barely_matter(stream):
    options = pose_graph_options(PoseGraphConfig(solver="batch"))
    before = absolute_trajectory_error(stream.ground_truth, stream.odometry).rmse_m

    def after(loops):
        edges = [LoopEdge(q, m, rel, cov) for q, m, rel, cov in loops]
        result = optimize_pose_graph(stream.odometry, edges, options)
        return absolute_trajectory_error(stream.ground_truth, result.poses).rmse_m, result.loop_weights

    clean, _ = after(stream.loops)
    assert clean < before / 3.0  # the goal; measured 3.1x at this seed (docs/benchmarks.md)
    wrong, weights = after(stream.loops + stream.wrong)
    assert wrong < 1.5 * clean
    n = len(stream.loops)  # the kernel tells the wrong loops apart (true ones: weight >= 0.039 measured)
    assert weights[n:].max() < 0.01 < weights[:n].min()


def test_bench_runs_the_stream_and_a_missing_file_is_named(capsys, tmp_path):
    from vpr_ros.cli.bench.posegraph import add_arguments, run_posegraph_bench

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--live", "--datasets", "euroc", "--solvers", "batch", "--no-clean"])
    assert run_posegraph_bench(args) == 0
    out = capsys.readouterr().out
    assert "# euroc: real trajectory (EuRoC V1_02 Vicon ground truth), SIMULATED" in out
    with pytest.raises(InputError, match="missing.csv.*EuRoC ground truth"):
        euroc_ground_truth(tmp_path / "missing.csv")
    (tmp_path / "short.csv").write_text("1,0,0,0,1,0,0,0\n")
    with pytest.raises(InputError, match="short.csv"):
        euroc_ground_truth(tmp_path / "short.csv")
