"""The --optimize step: pose graph from a replay, ATE before/after, plot, g2o/TUM that GTSAM and evo read.

The last test is the issue's goal with the real default model on the SIMULATED single-stream Corridor
run (about 30 s on 2 cores).
"""

import json

import gtsam
import numpy as np
import pytest
from evo.tools import file_interface

import vpr_ros.cli.demo  # noqa: F401  bind demo.load_extractor before a test monkeypatches replay's
import vpr_ros.cli.replay as replay
from conftest import TinyExtractor, corridor_image
from vpr_ros.cli.main import main
from vpr_ros.cli.optimize import optimize_stream
from vpr_ros.cli.simulated import simulated_trajectory
from vpr_ros.core.types import Frame, Keyframe, LoopClosure
from vpr_ros.io.bag_writer import write_image_bag

NS = 1_000_000_000
N = 111


def _keyframes(run):
    g = np.ones(4, np.float32) / 2
    return [Keyframe(i, i * NS // 10, "robot", "session", g, pose=p) for i, p in enumerate(run.odometry)]


def _loop(q, m):
    return LoopClosure(q, q * NS // 10, "robot", "session", m, m * NS // 10, "robot", "session", 0.9, 0, "mnn",
                       150, 400, 0, 150.0, 2, "test", 4)


@pytest.fixture(scope="module")
def run():
    return simulated_trajectory(N, N, seed=0)


def test_optimize_stream_corrects_drift_and_survives_wrong_loops(run, tmp_path):
    gt = dict(enumerate(run.ground_truth))
    true_loops = [_loop(N + i, i) for i in range(N)]
    rng = np.random.default_rng(1)
    wrong = []
    while len(wrong) < N // 10:  # 10% wrong loops between places >= 10 m apart
        q, m = int(rng.integers(0, N)), int(rng.integers(0, N))
        if abs(q - m) >= 10:
            wrong.append(_loop(N + q, m))
    clean = optimize_stream(tmp_path / "clean", _keyframes(run), true_loops, robot_id="robot",
                            session_id="session", ground_truth=gt, ground_truth_label="simulated ground truth")
    assert clean["ate_after_m"] <= clean["ate_before_m"] / 3
    noisy = optimize_stream(tmp_path / "noisy", _keyframes(run), true_loops + wrong, robot_id="robot",
                            session_id="session", ground_truth=gt)
    assert noisy["ate_after_m"] <= 1.5 * clean["ate_after_m"]
    assert noisy["pose_graph"]["loops_rejected_by_optimizer"] >= len(wrong)
    # A loop to another session's keyframe is not in this graph.
    other = LoopClosure(N, 0, "robot", "session", 5, 0, "robot", "other", 0.9, 0, "mnn", 150, 400, 0, 150.0,
                        2, "test", 4)
    skipped = optimize_stream(tmp_path / "skip", _keyframes(run), [other], robot_id="robot",
                              session_id="session")
    assert skipped["pose_graph"]["loops_skipped"] == 1 and skipped["ate_before_m"] is None
    metrics = json.loads((tmp_path / "clean" / "metrics.json").read_text())
    assert metrics["ate_ground_truth"] == "simulated ground truth" and metrics["ate_alignment"] == "se3"
    assert (tmp_path / "clean" / "trajectory_optimized.png").stat().st_size > 10_000


def test_replay_optimize_writes_a_graph_gtsam_and_evo_read(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(replay, "load_extractor", lambda config: TinyExtractor())
    n = 30
    sim = simulated_trajectory(n, n, seed=2)
    images = [corridor_image("ref", i) for i in range(n)] + [corridor_image("query", i) for i in range(n)]
    frames = [Frame(i * NS // 2, im, pose) for i, (im, pose) in enumerate(zip(images, sim.odometry))]
    bag = write_image_bag(tmp_path / "bag", frames, "/cam", encoding="jpeg", pose_topic="/odom")
    out = tmp_path / "out"
    assert main(["replay", str(bag), "--image-topic", "/cam", "--odom-topic", "/odom", "--optimize",
                 "--set", "verify.min_matches=30", "--set", "detector.min_loop_gap_sec=5",
                 "--set", "pose_graph.robust=huber",  # the pose_graph.* options reach the graph
                 "--out", str(out), "--no-progress"]) == 0
    assert "pose graph: 60 keyframes" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    graph = metrics["pose_graph"]
    assert graph["robust"] == "huber" and graph["keyframes"] == 60 and graph["loop_edges"] == metrics["num_loop_closures"] > 0
    assert metrics["ate_before_m"] is None  # a replay has no ground truth
    factors, values = gtsam.readG2o(str(out / "pose_graph.g2o"), True)
    assert values.size() == 60 and factors.size() == 59 + graph["loop_edges"]
    for name in ("keyframes_odometry.tum", "keyframes_optimized.tum"):
        assert file_interface.read_tum_trajectory_file(str(out / name)).num_poses == 60
    odom = file_interface.read_tum_trajectory_file(str(out / "keyframes_odometry.tum"))
    assert np.allclose(np.stack(odom.poses_se3), sim.odometry, atol=1e-5)


def test_demo_optimize_needs_the_single_stream(tmp_path, capsys):
    assert main(["demo", "--optimize", "--out", str(tmp_path), "--no-progress"]) == 2
    assert "--single-session" in capsys.readouterr().err


def test_simulated_single_stream_demo_meets_the_goals_with_the_real_model(tmp_path, capsys):
    assert main(["demo", "--single-session", "--optimize", "--out", str(tmp_path), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "ATE vs simulated ground truth" in printed and "precision" in printed
    assert "odometry gate (simulated odometry)" in printed
    metrics = json.loads((tmp_path / "single_session" / "metrics.json").read_text())
    assert metrics["odometry"] == "simulated" and metrics["ate_ground_truth"] == "simulated ground truth"
    # Appearance alone: precision 0.60 at recall 0.71 on this stream; the odometry gate fixes it.
    assert metrics["precision"] >= 0.95 and metrics["recall"] >= 0.7, metrics
    assert metrics["odometry_rejected"] > 0
    assert metrics["ate_after_m"] <= metrics["ate_before_m"] / 3, metrics
    for name in ("trajectory_optimized.png", "pose_graph.g2o", "keyframes_optimized.tum", "ground_truth.tum"):
        assert (tmp_path / "single_session" / name).exists(), name


def test_bench_posegraph_runs_and_reports_the_ate(capsys):
    assert main(["bench", "posegraph", "--sizes", "60", "--repeats", "1", "--robust", "cauchy", "none"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.strip().startswith("60 ")]
    assert [r[2] for r in rows] == ["cauchy", "none"]
    assert float(rows[0][-1]) < float(rows[0][-2])  # Cauchy: ATE after below ATE before
