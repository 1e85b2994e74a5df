"""``vpr-ros map optimize`` and ``vpr-ros map export`` (issues 21, 22): the optimised poses lower the ATE of
a map with drifted odometry, equal the existing pose graph's on one session, join a second session
through its loops, carry through compact/merge, are refused on an owned map; the export's g2o file
holds the odometry and loop edges and reads back with GTSAM ``readG2o``."""

from __future__ import annotations

import csv
import math

import gtsam
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from store_maps import DIM, MODEL, index_writer, snapshot, synthetic_keyframes
from vpr_ros.cli.main import main
from vpr_ros.cli.map_access import open_map
from vpr_ros.cli.map_graph import map_graph
from vpr_ros.cli.map_optimize import _first_guess
from vpr_ros.core.eval.trajectory import absolute_trajectory_error
from vpr_ros.core.geometry.pose_graph import LoopEdge, PoseGraphOptions, optimize_pose_graph, same_place_covariance
from vpr_ros.core.map.map_poses import map_poses, read_optimized_poses
from vpr_ros.core.map.ownership import DirLock
from vpr_ros.core.map.snapshot import save_keyframes
from vpr_ros.core.types import LoopClosure
from conftest import TinyExtractor  # at import time: later, 'conftest' may name another test folder's

N = 40  # keyframes per lap: a 10 m x 10 m square, 1 m apart


def _square(n=N):
    """Ground truth: n poses around a square (SIMULATED), heading along the path."""
    out = []
    for i in range(n):
        side, f = divmod(i * 4 * 10 / n, 10)
        x, y = [(f, 0), (10, f), (10 - f, 10), (0, 10 - f)][int(side)]
        T = np.eye(4)
        T[:3, :3] = Rotation.from_euler("z", int(side) * math.pi / 2).as_matrix()
        T[:3, 3] = [x, y, 0]
        out.append(T)
    return np.stack(out)


def _drifted(gt, seed, start=np.eye(4)):
    """SIMULATED odometry: the true steps with a yaw bias (0.29 deg/m, the drift the pose graph's odometry model
    expects) and noise, integrated from ``start``."""
    rng = np.random.default_rng(seed)
    odo = [start @ gt[0]]
    for a, b in zip(gt[:-1], gt[1:]):
        step = np.linalg.solve(a, b)
        noise = np.eye(4)
        noise[:3, :3] = Rotation.from_euler("z", 0.005 + rng.normal(0, 0.002)).as_matrix()
        noise[:3, 3] = rng.normal(0, 0.01, 3) * [1, 1, 0]
        odo.append(odo[-1] @ step @ noise)
    return np.stack(odo)


def _loop(gt_q, gt_m, q, m, sq="s1", sm="s1", measured=True):
    rel = np.linalg.solve(gt_m, gt_q) if measured else None
    return LoopClosure(q, q * 10**9, "r1", sq, m, m * 10**9, "r1", sm, 0.9, 0, "mnn", 50, 64, 40, 50.0, 3, MODEL, DIM,
                       relative_pose=rel, covariance=np.diag([0.02**2] * 3 + [0.01**2] * 3) if measured else None)


def _map(path, poses_by_session, loops):
    kfs = []
    for s, poses in poses_by_session.items():
        part = synthetic_keyframes(len(poses), seed=len(kfs), session=s)
        for kf, T in zip(part, poses):
            kf.pose = T
        kfs += part
    save_keyframes(path, kfs, MODEL, DIM, index_writer(kfs), loops=loops)
    return path


def _run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture(scope="module")
def lap():
    gt = _square()
    # the robot comes back past the start: keyframes 36..39 see keyframes 0..3 again (true loops)
    gt2 = np.concatenate([gt, gt[:4]])
    odo2 = _drifted(gt2, seed=1)
    loops = [_loop(gt2[N + k], gt2[k], N + k, k) for k in range(4)]
    return gt2, odo2, loops


def test_optimize_lowers_the_ate_and_matches_the_pose_graph(lap, tmp_path, capsys):
    gt, odo, loops = lap
    m = _map(tmp_path / "m", {"s1": odo}, loops)
    before = snapshot(m)
    rc, out, _ = _run(capsys, "map", "optimize", m, "--out", tmp_path / "o")
    assert rc == 0 and f"optimised {len(gt)} of {len(gt)} keyframes" in out and "4 loops" in out
    assert snapshot(m) == before  # --out: the input is not touched
    poses = read_optimized_poses(tmp_path / "o")
    opt = np.stack([poses[("r1", "s1", i)].T_map_base for i in range(len(gt))])
    ate_before = absolute_trajectory_error(gt, odo).rmse_m
    ate_after = absolute_trajectory_error(gt, opt).rmse_m
    assert ate_after < ate_before / 3, (ate_before, ate_after)
    # the same graph as optimize_pose_graph (cli/optimize.py, the node): the same poses
    ref = optimize_pose_graph(odo, [LoopEdge(N + k, k, lp.relative_pose, lp.covariance) for k, lp in enumerate(loops)],
                              PoseGraphOptions())
    assert np.allclose(opt, ref.poses, atol=1e-6)
    # marginal covariances: the far side of the square is less certain than the loop-closed start
    assert poses[("r1", "s1", 20)].covariance[0, 0] > 4 * poses[("r1", "s1", 2)].covariance[0, 0]
    # ... and closing the loop made the end of the lap more certain than odometry alone says
    odometry_only = map_poses(open_map(m).keyframes, {})
    assert poses[("r1", "s1", N + 3)].covariance[0, 0] < odometry_only[("r1", "s1", N + 3)].covariance[0, 0] / 4
    # in place: the same poses, nothing else changes; map info says they exist; compact keeps them
    assert _run(capsys, "map", "optimize", m)[0] == 0
    assert read_optimized_poses(m).keys() == poses.keys()
    assert "optimised poses: 44 keyframes" in _run(capsys, "map", "info", m)[1]
    assert _run(capsys, "map", "compact", m, "--out", tmp_path / "c")[0] == 0
    assert read_optimized_poses(tmp_path / "c").keys() == poses.keys()
    assert _run(capsys, "map", "label", m, "--id", 3, "--label", "door 3")[0] == 0  # rewrites the snapshot map
    assert read_optimized_poses(m).keys() == poses.keys()
    # map report draws the optimised trajectory over the odometry one, with the loops between optimised poses
    assert _run(capsys, "map", "report", m, "--out", tmp_path / "r.html")[0] == 0
    page = (tmp_path / "r.html").read_text()
    assert 'id="trajectory_optimized"' in page and page.count('class="loop-edge-optimized"') == len(loops)
    assert page.count('class="optimized"') == page.count('class="odometry"') == len(gt)
    assert _run(capsys, "map", "report", tmp_path / "o", "--out", tmp_path / "r2.html")[0] == 0


def test_optimize_refuses_a_map_another_writer_owns(lap, tmp_path, capsys):
    gt, odo, loops = lap
    m = _map(tmp_path / "m", {"s1": odo}, loops)
    before = snapshot(m)
    with DirLock(m):
        rc, _, err = _run(capsys, "map", "optimize", m)
    assert rc != 0 and "is in use by another writer" in err
    assert snapshot(m) == before
    assert _run(capsys, "map", "report", m, "--out", tmp_path / "r.html")[0] == 0  # no optimised poses: no such plot
    assert 'id="trajectory"' in (tmp_path / "r.html").read_text()
    assert 'id="trajectory_optimized"' not in (tmp_path / "r.html").read_text()


def test_a_second_session_joins_through_its_loops_and_a_lone_one_stays_out(lap, tmp_path, capsys):
    gt, odo, _ = lap
    gt = gt[:N]
    other_frame = np.eye(4)
    other_frame[:3, :3] = Rotation.from_euler("z", 2.5).as_matrix()
    other_frame[:3, 3] = [20, -30, 0]
    odo_b = _drifted(gt, seed=2, start=other_frame)  # session b's odometry frame is not the map's
    loops = [_loop(gt[k], gt[k], k, k, sq="b", sm="s1") for k in range(0, N, 5)]
    m = _map(tmp_path / "m", {"s1": odo[:N], "b": odo_b, "lone": odo_b[:5]}, loops)
    data = open_map(m)
    graph = map_graph(data.keyframes, data.loops)
    guess = _first_guess(graph, {0, 1})  # b placed through its first loop: near session 1 before optimising
    assert np.abs(guess[graph.node[("r1", "b", 7)], :3, 3] - odo[7, :3, 3]).max() < 0.5
    rc, out, _ = _run(capsys, "map", "optimize", m)
    assert rc == 0 and "left without optimised poses: r1/lone" in out
    poses = read_optimized_poses(m)
    assert {k[1] for k in poses} == {"s1", "b"}
    b = np.stack([poses[("r1", "b", i)].T_map_base for i in range(N)])
    s1 = np.stack([poses[("r1", "s1", i)].T_map_base for i in range(N)])
    # session b now lies in the map frame: on top of session 1 at the same places (no alignment)
    assert np.abs(b[:, :3, 3] - s1[:, :3, 3]).max() < 0.2
    assert np.abs(odo_b[:, :3, 3] - s1[:, :3, 3]).max() > 3
    # merge keeps the first map's poses only (another map's are in another frame)
    assert _run(capsys, "map", "merge", m, _map(tmp_path / "x", {"x": odo[:3]}, []), "--out", tmp_path / "mm")[0] == 0
    assert read_optimized_poses(tmp_path / "mm").keys() == poses.keys()


def _g2o_factors(path):
    graph, initial = gtsam.readG2o(str(path), True)
    between = [graph.at(k) for k in range(graph.size()) if isinstance(graph.at(k), gtsam.BetweenFactorPose3)]
    return between, initial


def test_export_writes_odometry_and_loop_edges_that_read_back(lap, tmp_path, capsys):
    gt, odo, loops = lap
    same_place = [_loop(gt[N + 1], gt[1], N + 1, 1, measured=False)]
    m = _map(tmp_path / "m", {"s1": odo}, loops + same_place)
    assert _run(capsys, "map", "optimize", m)[0] == 0
    rc, out, _ = _run(capsys, "map", "export", m, "--out", tmp_path / "e")
    assert rc == 0 and "43 odometry + 5 loop (4 measured, 0 rotation-only, 1 same-place)" in out
    between, initial = _g2o_factors(tmp_path / "e" / "loops.g2o")
    assert len(between) == len(gt) - 1 + 5 and initial.size() == len(gt)
    opt = read_optimized_poses(m)
    for i in range(len(gt)):  # vertices at the optimised poses
        assert np.allclose(initial.atPose3(i).matrix(), opt[("r1", "s1", i)].T_map_base, atol=1e-6)
    loop0, same = between[len(gt) - 1], between[-1]
    assert (loop0.keys()[0], loop0.keys()[1]) == (0, N)  # from = match, to = query
    assert np.allclose(loop0.measured().matrix(), loops[0].relative_pose, atol=1e-6)
    info = np.linalg.inv(loop0.noiseModel().covariance())  # GTSAM order rx ry rz x y z
    order = [3, 4, 5, 0, 1, 2]
    assert np.allclose(info, np.linalg.inv(loops[0].covariance)[np.ix_(order, order)], rtol=1e-6)
    assert np.allclose(same.measured().matrix(), np.eye(4))
    assert np.allclose(same.noiseModel().covariance(),
                       same_place_covariance(PoseGraphOptions())[np.ix_(order, order)], rtol=1e-6)
    rows = list(csv.DictReader(open(tmp_path / "e" / "loops.csv")))
    assert [r["g2o_measurement"] for r in rows] == ["measured"] * 4 + ["same_place"]
    assert [int(r["g2o_edge"]) for r in rows] == list(range(len(gt) - 1, len(gt) + 4))
    kf_rows = list(csv.DictReader(open(tmp_path / "e" / "keyframes.csv")))
    assert {r["pose_source"] for r in kf_rows} == {"optimized"} and kf_rows[5]["opt_x"]


def test_the_single_session_demo_map_exports_loop_edges(tmp_path, capsys):
    import vpr_ros.cli.demo as demo
    from vpr_ros.core.config import config_from_flat

    cfg = config_from_flat({"verify.min_matches": 30, "detector.min_loop_gap_sec": 1.0})
    demo.run_demo(tmp_path / "d", cfg, TinyExtractor(), single_session=True, count=20, progress=False)
    data = open_map(tmp_path / "d" / "map")
    rc, out, _ = _run(capsys, "map", "export", tmp_path / "d" / "map", "--out", tmp_path / "e")
    assert rc == 0 and len(data.loops) > 0
    between, initial = _g2o_factors(tmp_path / "e" / "loops.g2o")
    loop_edges = between[len(data.keyframes) - 1:]
    assert len(loop_edges) == len(data.loops) > 0 and initial.size() == len(data.keyframes)
    ids = {(lp.match_id, lp.query_id) for lp in data.loops}  # one session: vertex = keyframe id
    assert {(int(f.keys()[0]), int(f.keys()[1])) for f in loop_edges} == ids
