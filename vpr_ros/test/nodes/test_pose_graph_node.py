"""Issue 22: a robot with only odometry gets a corrected map -> odom from pose_graph_node over real DDS,
the same result as ``replay --optimize`` on the same input; and the loop-closure node's side (optimised
poses into its map frame). Scenarios: pose_graph_scenarios.py (a real node process, private netns)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from conftest import scenario_runner
from vpr_ros.cli.optimize import optimize_stream
from vpr_ros.core.eval.trajectory import absolute_trajectory_error

from pose_graph_scenarios import MAP_KEYFRAMES, ROBOT, SESSION, ODOM_FRAME, pose_graph_inputs

HERE = Path(__file__).resolve().parent
FRAMES = 40  # keyframes per lap


@pytest.fixture
def run_pose_graph(netns_ok: None, tmp_path: Path):
    return scenario_runner(HERE / "pose_graph_scenarios.py", tmp_path)


def _read_tum(path: Path) -> np.ndarray:
    return np.array([[float(v) for v in ln.split()[1:4]] for ln in path.read_text().splitlines() if ln.strip()])


def test_odometry_only_robot_gets_a_corrected_map_to_odom_equal_to_replay_optimize(run_pose_graph, tmp_path):
    r = run_pose_graph("odometry_only", "--frames", str(FRAMES), timeout=90.0)
    logs = r["_logs"]
    assert r["settled"] and r["rc"] == 0, logs
    run, kfs, loops, wrong = pose_graph_inputs(FRAMES)
    n = len(kfs)
    d = r["diag"]
    assert (d["keyframes"], d["loop_factors"], d["keyframes_without_pose"]) == (str(n + MAP_KEYFRAMES), str(len(loops)),
                                                                                "0"), d
    # The latched map keyframes reached the node started after them: a graph of their own (no loop into it).
    assert (d["map_keyframes"], d["components"], d["solver"], d["loops_join_waiting"]) == (
        str(MAP_KEYFRAMES), "2", "isam2", "0"), d
    # The same keyframes and loops through replay --optimize's function (batch LM): the same trajectory.
    gt = {kf.id: run.ground_truth[i] for i, kf in enumerate(kfs)}
    metrics = optimize_stream(tmp_path / "offline", kfs, loops, robot_id=ROBOT, session_id=SESSION, ground_truth=gt)
    offline = _read_tum(tmp_path / "offline" / "keyframes_optimized.tum")
    path = np.array(r["path"])
    assert r["path_frame"] == "map" and path.shape == (n, 3), logs
    assert np.abs(path - offline).max() < 0.01, np.abs(path - offline).max()
    assert metrics["ate_after_m"] <= metrics["ate_before_m"] / 3
    # map -> odom on /tf moves the newest odometry pose onto the optimised newest pose.
    T_map_odom = np.array(r["tf"][f"map->{ODOM_FRAME}"])
    corrected = (T_map_odom @ kfs[-1].pose)[:3, 3]
    assert np.abs(corrected - offline[-1]).max() < 0.01, (corrected, offline[-1])
    # At the robot the loop is closed: it stands where it stood on lap 1 (0.25 m across), which its
    # odometry puts metres away.
    lap1 = offline[FRAMES - 1]
    assert np.linalg.norm(corrected - lap1) < 1.0 < np.linalg.norm(kfs[-1].pose[:3, 3] - kfs[FRAMES - 1].pose[:3, 3])
    # Optimised keyframe poses for the map, with covariances, in the map frame anchored at the first keyframe.
    poses = r["poses"]
    assert poses["frame"] == "map" and poses["anchor"] == [ROBOT, SESSION] and poses["ids"] == list(range(n))
    assert poses["covariances"] == 36 * n and np.abs(np.array(poses["xyz"]) - offline).max() < 0.01
    nodes_path = np.stack([np.eye(4)] * n)
    nodes_path[:, :3, 3] = path
    assert absolute_trajectory_error(run.ground_truth, nodes_path).rmse_m <= metrics["ate_before_m"] / 3
    assert d["bad_input.keyframe"] == d["bad_input.loop"] == d["tf_skipped"] == "0" and wrong >= 4
    assert int(d["loops_rejected"].split()[0]) >= wrong  # the wrong loops are down-weighted
    assert float(d["update_ms_p95"]) > 0 and not math.isnan(float(d["update_ms_p50"]))


def test_the_loop_closure_node_announces_keyframes_and_stores_the_graphs_poses_in_its_live_map(run_pose_graph):
    frames = 8
    r = run_pose_graph("live_chain", "--frames", str(frames), timeout=90.0)
    logs = r["_logs"]
    assert r["settled"] and r["rc"] == {"loop_closure_node": 0, "pose_graph_node": 0}, logs
    announced = r["announced"]
    assert [a[2] for a in announced] == list(range(frames)), announced  # each once, in order
    assert all(a[0] == "lc" and a[3] and a[4] == "odom" for a in announced), announced
    assert [a[5] for a in announced] == [float(i) for i in range(frames)]  # its odometry pose (1 m a frame)
    # The graph's optimised poses came back and are in the live map: no loops, so the odometry poses.
    stored = r["stored"]
    assert sorted(map(int, stored)) == list(range(frames)), (stored, logs)
    assert all(np.allclose(stored[str(i)], [i, 0, 0], atol=1e-4) for i in range(frames)), stored


def _yaw(x: float, y: float, deg: float) -> np.ndarray:
    T = np.eye(4)
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    T[:2, :2] = [[c, -s], [s, c]]
    T[:2, 3] = x, y
    return T


def test_optimised_poses_are_stored_in_the_detectors_map_frame(tmp_path):
    """The loop-closure node's side without DDS: a pose graph anchored in another robot's frame is re-expressed
    in this map's frame through its first keyframe, and the detector's live map stores it."""
    from store_maps import DIM, MODEL, index_writer, synthetic_keyframes
    from vpr_ros.core.config import config_from_flat
    from vpr_ros.core.detector import LoopClosureDetector
    from vpr_ros.core.map import map_poses as mp
    from vpr_ros.core.map.snapshot import save_keyframes
    from vpr_ros.nodes.optimized_poses import poses_in_map_frame
    from vpr_ros.nodes.pose_graph_msgs import keyframe_poses_from_msg, keyframe_poses_msg

    class Fixed:
        model_id, global_dim = MODEL, DIM

    kfs = synthetic_keyframes(4)  # robot r1, session s1, odometry x = 0, 1, 2, 3
    save_keyframes(tmp_path / "snap", kfs, MODEL, DIM, index_writer(kfs))
    det = LoopClosureDetector(config_from_flat({"map.local_encoding": "float32"}), Fixed())
    det.load_map(tmp_path / "snap")
    det.attach_store(tmp_path / "live")
    # The graph's frame: robot "a"'s, in which this map's frame sits at T_a_map; optimisation moved keyframe 3
    # by 0.2 m in y. Covariances are 1 cm / 0.5 deg, and one keyframe the map does not hold comes along.
    T_a_map = _yaw(5.0, -2.0, 30.0)
    optimised = {mp.pose_key(kf): T_a_map @ kf.pose @ (_yaw(0, 0.2, 0) if kf.id == 3 else np.eye(4)) for kf in kfs}
    optimised[("a", "sa", 0)] = np.eye(4)
    keys = list(optimised)
    cov = np.diag([1e-4, 4e-4, 1e-4, 1e-5, 1e-5, 1e-4])
    msg = keyframe_poses_msg(keys, np.stack([optimised[k] for k in keys]), np.stack([cov] * len(keys)), "map",
                             0, ("a", "sa"))
    placed = poses_in_map_frame(det.keyframes, keyframe_poses_from_msg(msg))
    assert set(placed) == {mp.pose_key(kf) for kf in kfs}  # the other robot's keyframe is not this map's
    for kf in kfs:
        expected = kf.pose @ (_yaw(0, 0.2, 0) if kf.id == 3 else np.eye(4))
        assert np.allclose(placed[mp.pose_key(kf)].T_map_base, expected, atol=1e-9)
    R = _yaw(0, 0, -30.0)[:3, :3]  # the rotation from the graph's frame into the map's
    J = np.kron(np.eye(2), R)
    assert np.allclose(placed[mp.pose_key(kfs[1])].covariance, J @ cov @ J.T)
    det.store_optimized_poses(placed, "live pose graph (map)")
    stored = mp.read_optimized_poses(tmp_path / "live")
    det.detach_store()
    assert set(stored) == set(placed) and np.allclose(stored[mp.pose_key(kfs[3])].T_map_base[:3, 3], [3.0, 0.2, 0])
    # Refused, with the reason: without the map frame's first keyframe, or without covariances.
    rest = {k: v for k, v in keyframe_poses_from_msg(msg).items() if k != mp.pose_key(kfs[0])}
    assert "first keyframe" in poses_in_map_frame(det.keyframes, rest)
    bare = keyframe_poses_msg(keys, np.stack([optimised[k] for k in keys]), None, "map", 0, ("a", "sa"))
    assert "covariances" in poses_in_map_frame(det.keyframes, keyframe_poses_from_msg(bare))


def test_launch_starts_both_nodes_with_the_shared_odometry_and_is_checked_by_ast():
    import ast

    from vpr_ros.launch_args import LAUNCH_ARGUMENTS, to_ros_args
    from vpr_ros.launch_pose_graph import POSE_GRAPH_ARGUMENTS, pose_graph_launch_configs

    lc, pg = pose_graph_launch_configs({"namespace": "robot1", "odom_topic": "/wheel/odom", "config": "/c.yaml",
                                        "loop_topics": "loop_closures,/robot2/loop_closures", "solver": "batch"})
    assert (lc.executable, pg.executable) == ("loop_closure_node", "pose_graph_node")
    assert lc.config.namespace == pg.config.namespace == "robot1" and pg.config.params_files == ("/c.yaml",)
    assert dict(pg.config.remappings) == {"odom": "/wheel/odom"} == {"odom": dict(lc.config.remappings)["odom"]}
    assert pg.config.overrides == {"use_sim_time": False, "pose_graph.robot_id": "robot1", "pose_graph.solver": "batch",
                                   "pose_graph.loop_topics": "loop_closures,/robot2/loop_closures"}
    assert "__node:=pose_graph_node" in to_ros_args(pg.config)
    (only,) = pose_graph_launch_configs({"loop_closure": "false"})
    assert only.executable == "pose_graph_node" and "pose_graph.robot_id" not in only.config.overrides
    for bad, match in (({"odom_topic": ""}, "odom_topic"), ({"solver": "lm"}, "solver"), ({"modle": "x"}, "modle"),
                       ({"loop_closure": "maybe"}, "loop_closure")):
        with pytest.raises(ValueError, match=match):
            pose_graph_launch_configs(bad)
    path = HERE.parents[1] / "launch" / "pose_graph.launch.py"
    tree = ast.parse(path.read_text())
    declared = {n.args[0].value for n in ast.walk(tree) if isinstance(n, ast.Call)
                and getattr(n.func, "id", "") == "_declare" and n.args and isinstance(n.args[0], ast.Constant)}
    assert declared == set(LAUNCH_ARGUMENTS) | set(POSE_GRAPH_ARGUMENTS)
    assert "pose_graph_launch_configs(values)" in path.read_text()
    assert all(len(desc) > 30 for _, desc in POSE_GRAPH_ARGUMENTS.values())


def test_the_loop_closure_node_announces_a_loaded_maps_keyframes_for_the_graphs_map_stream(tmp_path):
    """What ``map_keyframes`` carries (nodes/keyframe_announce.py), without DDS: a loaded map's keyframes at
    their map poses with covariances, each once, and the graph takes them as its map stream."""
    from store_maps import DIM, MODEL, index_writer, synthetic_keyframes
    from vpr_ros.core.config import config_from_flat
    from vpr_ros.core.detector import LoopClosureDetector
    from vpr_ros.core.geometry.live_pose_graph import LivePoseGraph
    from vpr_ros.core.map.snapshot import save_keyframes
    from vpr_ros.nodes.keyframe_announce import map_keyframe_msgs
    from vpr_ros.nodes.pose_graph_msgs import map_keyframe_from_msg

    class Fixed:
        model_id, global_dim = MODEL, DIM

    kfs = synthetic_keyframes(4)  # robot r1, session s1, odometry x = 0, 1, 2, 3: the map frame's session
    save_keyframes(tmp_path / "snap", kfs, MODEL, DIM, index_writer(kfs))
    det = LoopClosureDetector(config_from_flat({"map.local_encoding": "float32"}), Fixed())
    assert map_keyframe_msgs(det, "map", set()) == []  # nothing loaded, nothing to announce
    det.load_map(tmp_path / "snap")
    msgs = map_keyframe_msgs(det, "map", set())
    assert [k for k, _ in msgs] == [("r1", "s1", i) for i in range(4)]
    graph = LivePoseGraph()
    covs = []
    for (key, msg), kf in zip(msgs, kfs):
        got_key, stamp, pose, cov, frame = map_keyframe_from_msg(msg)
        assert (got_key, stamp, frame) == (key, kf.stamp_ns, "map") and np.allclose(pose, kf.pose, atol=1e-9)
        covs.append(cov)
        assert graph.add_map_keyframe(got_key, stamp, pose, cov)
    # The drift accumulated from the map frame's first keyframe (core/map/map_poses.py): it grows.
    assert all(c is not None for c in covs) and covs[0][0, 0] < covs[3][0, 0]
    assert graph.stats().map_keyframes == 4 and graph.robot_frames() == []
    assert [k for k, _ in map_keyframe_msgs(det, "map", {("r1", "s1", 0)})] == [("r1", "s1", i) for i in (1, 2, 3)]

