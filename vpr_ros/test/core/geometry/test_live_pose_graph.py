"""The live pose graph (core/geometry/live_pose_graph.py) on the SIMULATED two-lap corridor: keyframe by
keyframe it reaches the offline batch result, survives wrong loops, gives the right map->odom, and joins
robots' graphs in the lowest robot id's frame."""

import math

import numpy as np
import pytest

from vpr_ros.cli.simulated import simulated_trajectory
from vpr_ros.core.config.pose_graph import PoseGraphConfig
from vpr_ros.core.errors import ConfigError, InputError
from vpr_ros.core.eval.trajectory import absolute_trajectory_error
from vpr_ros.core.geometry.live_pose_graph import LivePoseGraph, LoopInput
from vpr_ros.core.geometry.pose_graph import LoopEdge, optimize_pose_graph

N = 111  # keyframes per lap, as in the Corridor demo


@pytest.fixture(scope="module")
def run():
    return simulated_trajectory(N, N, seed=0)


def _key(i, robot="r", session="s"):
    return robot, session, i


def _wrong(count, seed=3):
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < count:
        q, m = int(rng.integers(0, N)), int(rng.integers(0, N))
        if abs(q - m) >= 10:
            out.append((N + q, m))
    return out


def _stream(run, pairs, config=None, order=None):
    """Keyframe by keyframe, each loop right after its newer keyframe, one update each; ``order``
    (a list) receives the loops in the order they were added."""
    graph = LivePoseGraph(config)
    by_query = {}
    for q, m in pairs:
        by_query.setdefault(q, []).append(m)
    for i, pose in enumerate(run.odometry):
        assert graph.add_keyframe(_key(i), i, pose, "odom")
        for m in by_query.get(i, []):
            assert graph.add_loop(LoopInput(_key(i), _key(m))) == "added"
            if order is not None:
                order.append((i, m))
        graph.update()
    graph.update(force=True)
    return graph


def _ate(run, poses):
    return absolute_trajectory_error(run.ground_truth, poses).rmse_m


TRUE = [(N + i, i) for i in range(N)]


@pytest.mark.parametrize("solver", ["isam2", "batch"])
def test_incremental_equals_the_offline_batch_and_corrects_the_drift(run, solver):
    pairs = TRUE + _wrong(N // 10)
    graph = _stream(run, pairs, PoseGraphConfig(solver=solver, batch_every=7))
    offline = optimize_pose_graph(run.odometry, [LoopEdge(q, m) for q, m in pairs])
    live = graph.poses()
    gap = np.linalg.norm(live[:, :3, 3] - offline.poses[:, :3, 3], axis=1).max()
    assert gap < (0.01 if solver == "isam2" else 1e-4), gap
    assert _ate(run, live) <= _ate(run, run.odometry) / 3
    stats = graph.stats()
    assert (stats.keyframes, stats.odometry_factors, stats.loop_factors) == (2 * N, 2 * N - 1, len(pairs))
    assert stats.components == 1 and stats.joins == 0 and stats.updates >= 2 * N // 7


def test_wrong_loops_are_down_weighted_and_the_map_survives_them(run):
    once = {"solver": "batch", "batch_every": 10**6}  # one optimisation at the end: the references
    clean = _stream(run, TRUE, PoseGraphConfig(**once))
    wrong = _wrong(N // 10)
    order = []
    noisy = _stream(run, TRUE + wrong, order=order)
    weights = dict(zip(order, noisy.loop_weights()))
    assert all(weights[pair] < 0.5 for pair in wrong), weights  # every wrong loop
    assert noisy.stats().loops_rejected >= len(wrong)
    assert _ate(run, noisy.poses()) <= 1.5 * _ate(run, clean.poses())
    # Without the robust kernel the same wrong loops wreck it: the kernel is what the test guards.
    plain = _stream(run, TRUE + wrong, PoseGraphConfig(robust="none", **once))
    assert _ate(run, plain.poses()) > 1.5 * _ate(run, clean.poses())


def _yaw(x, y, yaw):
    p = np.eye(4)
    p[:2, :2] = [[math.cos(yaw), -math.sin(yaw)], [math.sin(yaw), math.cos(yaw)]]
    p[:2, 3] = x, y
    return p


def test_map_to_odom_moves_the_newest_odometry_pose_onto_its_optimised_pose():
    # A 4 m x 4 m square back to the start; odometry over-reads forward motion by 3 % and turns
    # 2 deg too little per corner (within its drift model), so it ends 0.4 m from the start. A precise
    # metric loop says the last keyframe is at the first one's place.
    truth = [_yaw(*xy, yaw) for xy, yaw in [((0, 0), 0), ((4, 0), math.pi / 2), ((4, 4), math.pi),
                                              ((0, 4), -math.pi / 2), ((0, 0), 0)]]
    odom = [truth[0]]
    for a, b in zip(truth, truth[1:]):
        step = np.linalg.solve(a, b)
        step[:3, 3] *= 1.03
        odom.append(odom[-1] @ step @ _yaw(0, 0, math.radians(-2)))
    graph = LivePoseGraph()
    for i, pose in enumerate(odom):
        graph.add_keyframe(_key(i), 10 + i, pose, "wheel_odom")
    graph.update()
    (frame,) = graph.robot_frames()
    assert np.allclose(frame.T_map_odom, np.eye(4), atol=1e-6)  # no loop: map == odometry frame
    assert (frame.odom_frame, frame.stamp_ns, frame.anchor) == ("wheel_odom", 14, ("r", "s"))
    cov = np.diag([1e-4] * 3 + [1e-5] * 3)
    graph.add_loop(LoopInput(_key(4), _key(0), np.eye(4), cov))
    graph.update()
    (frame,) = graph.robot_frames()
    newest = graph.poses()[-1]
    assert np.allclose(frame.T_map_odom @ odom[-1], newest, atol=1e-9)
    assert np.linalg.norm(newest[:3, 3]) < 0.05  # the loop pulled it back to the start
    assert np.linalg.norm(odom[-1][:3, 3]) > 0.4  # from where odometry put it
    assert not np.allclose(frame.T_map_odom, np.eye(4), atol=1e-2)


T_A_B = _yaw(10, 0, math.pi / 2)  # robot "b" starts 10 m east of "a", turned 90 deg
PRECISE = np.diag([1e-4] * 3 + [1e-5] * 3)


def _two_robots(config=None):
    """Robots "a" (east along y = 0) and "b" (north along x = 10), each odometry frame its start pose,
    b's keyframes first; no loop yet."""
    a = [_yaw(i, 0, 0) for i in range(6)]
    b_true = [_yaw(10, i, math.pi / 2) for i in range(6)]
    graph = LivePoseGraph(config)
    for i, p in enumerate(b_true):
        graph.add_keyframe(_key(i, "b"), i, np.linalg.solve(T_A_B, p), "b/odom")
    for i, p in enumerate(a):
        graph.add_keyframe(_key(i, "a"), i, p, "a/odom")
    graph.update()
    return graph, a, b_true


def _loop(graph_a, b_true, ia, ib, error=None, **kw):
    """A metric loop b[ib] -> a[ia] measured from the true poses (``error``: (4, 4) applied to it)."""
    measured = np.linalg.solve(graph_a[ia], b_true[ib])
    return LoopInput(_key(ib, "b"), _key(ia, "a"), measured if error is None else measured @ error, PRECISE, **kw)


def test_two_agreeing_loops_between_robots_join_them_in_the_lowest_robot_ids_frame():
    graph, a, b_true = _two_robots()
    assert graph.stats().components == 2
    frames = {f.robot_id: f for f in graph.robot_frames()}
    assert frames["b"].anchor == ("b", "s") and np.allclose(frames["b"].T_map_odom, np.eye(4), atol=1e-6)
    # One metric loop alone does not join (join_min_loops 2): it waits for another that agrees.
    assert graph.add_loop(_loop(a, b_true, 5, 0)) == "waiting"
    graph.update()
    s = graph.stats()
    assert (s.components, s.joins, s.loop_factors, s.loops_join_waiting) == (2, 0, 0, 1)
    assert graph.add_loop(_loop(a, b_true, 4, 1)) == "added"
    graph.update()
    s = graph.stats()
    assert (s.components, s.joins, s.loop_factors, s.loops_join_waiting, s.loops_join_refused) == (1, 1, 2, 0, 0)
    frames = {f.robot_id: f for f in graph.robot_frames()}
    assert frames["a"].anchor == frames["b"].anchor == ("a", "s")
    assert np.allclose(frames["b"].T_map_odom, T_A_B, atol=1e-3)
    poses = dict(zip(graph.keys(), graph.poses()))
    for i in range(6):
        assert np.allclose(poses[_key(i, "b")], b_true[i], atol=1e-3)
        assert np.allclose(poses[_key(i, "a")], a[i], atol=1e-6)
    assert graph.anchor_of(_key(3, "b")) == ("a", "s") and len(graph.nodes_of(("a", "s"))) == 12
    # b keeps going after the join: its new keyframes land in a's frame too.
    graph.add_keyframe(_key(6, "b"), 6, np.linalg.solve(T_A_B, _yaw(10, 6, math.pi / 2)), "b/odom")
    graph.update()
    assert np.allclose(dict(zip(graph.keys(), graph.poses()))[_key(6, "b")], _yaw(10, 6, math.pi / 2), atol=1e-3)


def test_one_wrong_loop_between_robots_joins_nothing():
    wrong = _yaw(3, -2, math.radians(40))  # a place that looks alike, 3.6 m away, turned 40 deg
    graph, a, b_true = _two_robots()
    assert graph.add_loop(_loop(a, b_true, 5, 0, wrong)) == "waiting"
    graph.update()
    s = graph.stats()
    assert (s.components, s.joins, s.loop_factors, s.loops_join_waiting) == (2, 0, 0, 1)
    assert {f.robot_id: f.anchor for f in graph.robot_frames()} == {"a": ("a", "s"), "b": ("b", "s")}
    # join_min_loops 1 is the unguarded join: the wrong loop alone places b, 3.6 m off.
    graph, a, b_true = _two_robots(PoseGraphConfig(join_min_loops=1))
    assert graph.add_loop(_loop(a, b_true, 5, 0, wrong)) == "added"
    graph.update()
    poses = dict(zip(graph.keys(), graph.poses()))
    assert graph.stats().joins == 1 and np.linalg.norm(poses[_key(0, "b")][:3, 3] - b_true[0][:3, 3]) > 3


def test_a_wrong_loop_and_two_right_ones_join_with_the_right_ones():
    graph, a, b_true = _two_robots()
    assert graph.add_loop(_loop(a, b_true, 5, 0, _yaw(3, -2, math.radians(40)))) == "waiting"  # wrong, first
    # Unknown scale: cannot place b, waits, and becomes an ordinary factor once b is joined.
    assert graph.add_loop(_loop(a, b_true, 3, 3, translation_scale_known=False)) == "waiting"
    assert graph.add_loop(_loop(a, b_true, 4, 1)) == "waiting"   # disagrees with the wrong one
    assert graph.add_loop(_loop(a, b_true, 2, 2)) == "added"      # agrees with the last: join
    graph.update()
    s = graph.stats()
    assert (s.components, s.joins, s.loop_factors, s.loops_join_refused, s.loops_join_waiting) == (1, 1, 3, 1, 0)
    poses = dict(zip(graph.keys(), graph.poses()))
    for i in range(6):
        assert np.allclose(poses[_key(i, "b")], b_true[i], atol=1e-3)
    assert graph.add_loop(_loop(a, b_true, 5, 0, _yaw(3, -2, 0))) == "duplicate"  # the refused pair stays out


def _drifted(truth, scale=1.02, yaw_deg=-0.3):
    odom = [truth[0]]
    for p0, p1 in zip(truth, truth[1:]):
        step = np.linalg.solve(p0, p1)
        step[:3, 3] *= scale
        odom.append(odom[-1] @ step @ _yaw(0, 0, math.radians(yaw_deg)))
    return odom


def test_loops_into_a_loaded_map_put_the_robot_in_the_maps_frame():
    # The map of robot "m" (two sessions, one map frame): keyframes every metre along x at their map poses.
    m_true = [_yaw(i, 0, 0) for i in range(10)]
    cov = np.diag([0.01 ** 2] * 3 + [math.radians(0.2) ** 2] * 3)
    graph = LivePoseGraph()
    # A loop into the map before the map's keyframes arrive waits for them.
    T_map_odom = _yaw(3, -2, 0.5)                       # where robot "a"'s odometry frame lies in the map
    a_true = [_yaw(i, 0.2, 0) for i in range(10)]       # a drives the mapped corridor, 0.2 m to the side
    a_odom = _drifted([np.linalg.solve(T_map_odom, p) for p in a_true])
    for i, p in enumerate(a_odom):
        assert graph.add_keyframe(_key(i, "a"), 100 + i, p, "a/odom")
    measured = [np.linalg.solve(m_true[i], a_true[i]) for i in range(10)]
    loop_cov = np.diag([0.03 ** 2] * 3 + [math.radians(0.5) ** 2] * 3)
    assert graph.add_loop(LoopInput(_key(4, "a"), ("m", "old", 4), measured[4], loop_cov)) == "pending"
    for i, p in enumerate(m_true):
        assert graph.add_map_keyframe(("m", "old" if i < 5 else "old2", i), i, p, cov)
    graph.update()
    s = graph.stats()
    assert (s.components, s.map_keyframes, s.joins, s.loops_join_waiting) == (2, 10, 0, 1)
    (frame,) = graph.robot_frames()  # a map is no robot
    assert frame.robot_id == "a" and np.allclose(frame.T_map_odom, np.eye(4), atol=1e-6)  # its own frame yet
    assert graph.add_loop(LoopInput(_key(9, "a"), ("m", "old2", 9), measured[9], loop_cov)) == "added"
    graph.update()
    (frame,) = graph.robot_frames()
    # The map's frame wins over robot "a" (a lower robot id than "m"), and a's poses are in it.
    assert frame.anchor == ("m", "old") and graph.stats().components == 1 and graph.is_map(("m", "old2", 9))
    poses = dict(zip(graph.keys(), graph.poses()))
    err = [np.linalg.norm(poses[_key(i, "a")][:3, 3] - a_true[i][:3, 3]) for i in range(10)]
    assert max(err) < 0.15 and max(err[4:]) < 0.06, err  # within the loops' 3 cm and the odometry's drift
    assert max(np.linalg.norm(poses[("m", "old", i)][:3, 3] - m_true[i][:3, 3]) for i in range(5)) < 0.01
    right = a_true[-1] @ np.linalg.inv(a_odom[-1])      # the map -> odom that puts a's newest keyframe right
    # Where it puts the robot now (its translation alone moves with the rotation's lever arm, 10 m here).
    assert np.linalg.norm((frame.T_map_odom @ a_odom[-1])[:3, 3] - a_true[-1][:3, 3]) < 0.05
    assert np.degrees(np.arccos(np.clip((np.trace(right[:3, :3].T @ frame.T_map_odom[:3, :3]) - 1) / 2, -1, 1))) < 2
    # A map stream takes no odometry keyframe (nor the other way round); a bad covariance is named.
    assert not graph.add_keyframe(("m", "old", 20), 20, np.eye(4))
    assert not graph.add_map_keyframe(_key(20, "a"), 1, np.eye(4))
    assert graph.stats().keyframes_map_conflict == 2
    with pytest.raises(InputError, match="positive definite"):
        graph.add_map_keyframe(("m", "old", 30), 30, np.eye(4), np.zeros((6, 6)))


def test_a_map_keyframes_prior_has_its_map_frame_covariance():
    from vpr_ros.core.map.map_poses import covariance_from_tangent

    T = _yaw(2, 1, math.radians(70))
    cov = np.diag([0.04, 0.01, 0.0025, 1e-4, 2e-4, 3e-3])  # ROS layout: map-frame x, y, z, then rotations
    cov[0, 1] = cov[1, 0] = 0.005
    graph = LivePoseGraph()
    graph.add_map_keyframe(("m", "old", 0), 0, T, cov)
    graph.update()
    assert np.allclose(covariance_from_tangent(T, graph.marginal_covariances([0])[0]), cov, atol=1e-9)


def test_loops_wait_for_their_keyframes_and_bad_input_is_counted():
    graph = LivePoseGraph(PoseGraphConfig(max_pending_loops=2))
    graph.add_keyframe(_key(0), 0, np.eye(4))
    assert graph.add_loop(LoopInput(_key(2), _key(0))) == "pending"
    assert graph.add_loop(LoopInput(_key(0), _key(2))) == "duplicate"
    assert graph.add_loop(LoopInput(_key(0), _key(0))) == "invalid"
    for k in (7, 8):
        assert graph.add_loop(LoopInput(_key(k), _key(0))) == "pending"  # the oldest pending loop (2) goes
    graph.add_keyframe(_key(1), 1, _yaw(1, 0, 0))
    graph.add_keyframe(_key(2), 2, _yaw(2, 0, 0))
    assert not graph.add_keyframe(_key(2), 2, _yaw(2, 0, 0))        # again
    assert not graph.add_keyframe(_key(1), 1, _yaw(1, 0, 0))        # again
    graph.add_keyframe(_key(7), 7, _yaw(3, 0, 0))
    assert not graph.add_keyframe(_key(5), 5, _yaw(2.5, 0, 0))      # older than the stream's newest
    graph.update()
    s = graph.stats()
    assert (s.loop_factors, s.loops_pending, s.loops_dropped, s.loops_duplicate, s.loops_invalid) == (1, 1, 1, 1, 1)
    assert (s.keyframes, s.keyframes_duplicate, s.keyframes_out_of_order) == (4, 2, 1)
    with pytest.raises(InputError, match="finite"):
        graph.add_keyframe(_key(9), 9, np.full((4, 4), np.nan))


def test_batch_solver_optimises_at_its_interval_and_when_forced(run):
    graph = LivePoseGraph(PoseGraphConfig(solver="batch", batch_every=5))
    solved = []
    for i in range(12):
        graph.add_keyframe(_key(i), i, run.odometry[i])
        solved.append(graph.update())
    assert solved == [i in (4, 9) for i in range(12)]
    assert graph.update(force=True) and not graph.update(force=True)  # nothing new the second time


def test_defaults_are_the_offline_graphs_so_replay_optimize_builds_the_same_graph():
    from vpr_ros.core.geometry.live_pose_graph import pose_graph_options
    from vpr_ros.core.geometry.pose_graph import PoseGraphOptions

    assert pose_graph_options(PoseGraphConfig()) == PoseGraphOptions()


def test_gnc_needs_the_batch_solver():
    with pytest.raises(ConfigError, match="pose_graph.solver=batch"):
        PoseGraphConfig(robust="gnc")
    PoseGraphConfig(robust="gnc", solver="batch")


def test_live_bench_runs_and_labels_what_is_simulated(capsys):
    import argparse

    from vpr_ros.cli.bench.posegraph import add_arguments, run_posegraph_bench
    from vpr_ros.cli.bench.posegraph_data import plaza_stream

    parser = argparse.ArgumentParser()
    add_arguments(parser)  # `vpr-ros bench posegraph ...` without importing every other bench target
    args = parser.parse_args(["--live", "--datasets", "corridor", "--sizes", "60", "--solvers", "isam2", "--no-clean"])
    assert run_posegraph_bench(args) == 0
    out = capsys.readouterr().out
    assert "SIMULATED" in out and "corridor-60" in out and "isam2" in out
    plaza = plaza_stream(0.1, 0)  # the real trajectory shipped with GTSAM, drift and loops simulated
    assert "real" in plaza.label and "SIMULATED" in plaza.label and len(plaza.ground_truth) > 1000
    assert len(plaza.loops) > 500 and len(plaza.wrong) == round(0.1 * len(plaza.loops))
