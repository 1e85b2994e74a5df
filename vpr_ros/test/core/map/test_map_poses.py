"""Keyframe poses in the map frame (core/map/map_poses.py): the odometry covariance, which pose wins,
the optimised-pose table in snapshot and live maps (round trip, ownership, old maps, damage), the
detector's queue into its live map and the poses of loaded maps."""

from __future__ import annotations

import dataclasses
import json
import sqlite3

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from store_maps import DIM, MODEL, index_writer, snapshot, synthetic_keyframes
from vpr_ros.cli.map_verify import verify_map
from vpr_ros.core.config import config_from_flat
from vpr_ros.core.detector import LoopClosureDetector
from vpr_ros.core.errors import InputError, MapStoreError
from vpr_ros.core.geometry.pose_graph import PoseGraphOptions
from vpr_ros.core.map import live_map_dirs, map_poses as mp
from vpr_ros.core.map.ownership import DirLock
from vpr_ros.core.map.snapshot import load_keyframes, save_keyframes

FP = {"model_id": MODEL, "weights_digest": "test", "preprocessing": None}
IN_USE = "is in use by another writer"


def _pose(rng, scale=1.0):
    T = np.eye(4)
    T[:3, :3] = Rotation.from_rotvec(rng.normal(0, 0.3, 3)).as_matrix()
    T[:3, 3] = rng.normal(0, scale, 3)
    return T


def _optimized(kfs, rng):
    out = {}
    for kf in kfs:
        A = rng.normal(size=(6, 6))
        out[mp.pose_key(kf)] = mp.MapPose(_pose(rng), A @ A.T * 1e-3, "optimized")
    return out


def _same(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k].T_map_base, b[k].T_map_base)
                                        and np.array_equal(a[k].covariance, b[k].covariance)
                                        and a[k].source == b[k].source for k in a)


def _snap(path, kfs):
    save_keyframes(path, kfs, MODEL, DIM, index_writer(kfs))
    return path


def _live(path, kfs):
    log = live_map_dirs.open_for_append(path, FP, DIM, "float32")
    for kf in kfs:
        log.append(kf)
    log.close()
    return path


def test_map_pose_refuses_what_is_not_a_pose_or_a_covariance():
    good = np.eye(6)
    for T, cov, source, why in ((np.eye(3), good, "optimized", "finite"),
                                (np.diag([2.0, 1, 1, 1]), good, "optimized", "rigid"),
                                (np.eye(4), -good, "optimized", "positive semi-definite"),
                                (np.eye(4), good, "slam", "choose one of")):
        with pytest.raises(InputError, match=why):
            mp.MapPose(T, cov, source)
    pose = mp.MapPose(np.eye(4), good, "odometry")
    with pytest.raises(ValueError):  # frozen arrays: a caller cannot change a stored pose in place
        pose.T_map_base[0, 3] = 1


def test_odometry_drift_model_is_the_pose_graphs():
    graph = PoseGraphOptions()
    assert {f.name: getattr(graph, f.name) for f in dataclasses.fields(mp.OdometryDrift)} == \
        dataclasses.asdict(mp.OdometryDrift())


def test_odometry_covariance_matches_sampled_drift():
    """First-order propagation against Monte Carlo: integrate noisy steps, compare ROS-convention errors."""
    rng = np.random.default_rng(3)
    steps = []
    for _ in range(6):
        S = np.eye(4)
        S[:3, :3] = Rotation.from_rotvec([0.02, -0.01, 0.4]).as_matrix()
        S[:3, 3] = [1.0, 0.2, 0.05]
        steps.append(S)
    poses = [np.eye(4)]
    for S in steps:
        poses.append(poses[-1] @ S)
    drift = mp.OdometryDrift(odometry_sigma_m=0.02, odometry_sigma_deg=1.0)
    cov = mp.odometry_covariances(np.stack(poses), drift)[-1]
    n = 4000  # vectorised over samples: (n, 3, 3) rotations, (n, 3) positions
    e0 = rng.standard_normal((n, 6)) @ np.linalg.cholesky(drift.floor()).T
    R, t = Rotation.from_rotvec(e0[:, 3:]).as_matrix(), e0[:, :3]
    for S in steps:
        eta = rng.standard_normal((n, 6)) @ np.linalg.cholesky(drift.step_covariance(S)).T
        t = t + np.einsum("nij,nj->ni", R, S[:3, 3] + eta[:, :3])
        R = R @ S[:3, :3] @ Rotation.from_rotvec(eta[:, 3:]).as_matrix()
    R_err = R @ poses[-1][:3, :3].T  # R = exp(dtheta) R_est: rotation about the map's axes
    errors = np.c_[t - poses[-1][:3, 3], Rotation.from_matrix(R_err).as_rotvec()]
    sampled = np.cov(errors.T)
    sig = np.sqrt(np.diag(cov))
    assert np.allclose(sampled / np.outer(sig, sig), cov / np.outer(sig, sig), atol=0.08)
    assert np.allclose(np.sqrt(np.diag(sampled)), sig, rtol=0.1)
    # A random walk: the position sigma grows along the path, from the floor at the first keyframe.
    all_cov = mp.odometry_covariances(np.stack(poses), drift)
    assert np.all(np.diff([c[0, 0] + c[1, 1] for c in all_cov]) > 0)
    assert np.allclose(all_cov[0], drift.floor())


def test_map_poses_optimised_first_then_odometry_of_the_frame_session_only():
    kfs = synthetic_keyframes(4) + synthetic_keyframes(2, seed=1, session="s2")
    kfs[2].pose = None
    opt = {mp.pose_key(kfs[1]): mp.MapPose(np.eye(4), np.eye(6), "optimized"),
           mp.pose_key(kfs[5]): mp.MapPose(np.eye(4), np.eye(6), "optimized"),
           ("r9", "gone", 0): mp.MapPose(np.eye(4), np.eye(6), "optimized")}  # not in the map: ignored
    got = mp.map_poses(kfs, opt)
    assert {k: p.source for k, p in got.items()} == {
        ("r1", "s1", 0): "odometry", ("r1", "s1", 1): "optimized", ("r1", "s1", 3): "odometry",
        ("r1", "s2", 1): "optimized"}  # s2's odometry pose (kfs[4]) is in another frame: absent
    assert np.array_equal(got[("r1", "s1", 3)].T_map_base, kfs[3].pose)
    # the drift runs across the pose gap at keyframe 2: keyframe 3 is 3 m from the first
    assert got[("r1", "s1", 3)].covariance[0, 0] > got[("r1", "s1", 0)].covariance[0, 0]
    assert mp.map_poses(kfs, {}, frame=("r1", "s2")).keys() == {("r1", "s2", 0), ("r1", "s2", 1)}


@pytest.mark.parametrize("kind", ["snapshot", "live"])
def test_round_trip_in_place_and_to_a_copy(tmp_path, kind):
    rng = np.random.default_rng(0)
    kfs = synthetic_keyframes(5)
    m = (_snap if kind == "snapshot" else _live)(tmp_path / "m", kfs)
    assert mp.read_optimized_poses(m) == {} and mp.optimized_poses_info(m) is None  # a map without the table
    poses = _optimized(kfs[1:], rng)
    before = snapshot(m)
    mp.write_optimized_poses(m, poses, source_note="test copy", out=tmp_path / "copy")
    assert snapshot(m) == before  # --out leaves the input as it was
    assert _same(mp.read_optimized_poses(tmp_path / "copy"), poses)
    mp.write_optimized_poses(m, poses, source_note="test in place")
    assert _same(mp.read_optimized_poses(m), poses)
    assert mp.optimized_poses_info(m)["source_note"] == "test in place"
    fewer = dict(list(poses.items())[:2])
    mp.write_optimized_poses(m, fewer, source_note="again")  # a new optimisation replaces the old one
    assert _same(mp.read_optimized_poses(m), fewer)
    _, back = load_keyframes(m)  # everything else as it was, and the map still loads (manifest updated)
    assert [np.array_equal(a.pose, b.pose) and np.array_equal(a.local, b.local) for a, b in zip(back, kfs)] == [True] * 5
    assert verify_map(m).ok and "2 optimised poses" in verify_map(m).message


@pytest.mark.parametrize("kind", ["snapshot", "live"])
def test_a_map_another_writer_owns_is_refused_unchanged(tmp_path, kind):
    kfs = synthetic_keyframes(3)
    m = (_snap if kind == "snapshot" else _live)(tmp_path / "m", kfs)
    before = snapshot(m)
    with DirLock(m):
        with pytest.raises(MapStoreError, match=IN_USE):
            mp.write_optimized_poses(m, _optimized(kfs, np.random.default_rng(1)), source_note="x")
    assert snapshot(m) == before
    with pytest.raises(MapStoreError, match="does not hold"):  # poses of keyframes the map lacks: nothing written
        mp.write_optimized_poses(m, _optimized(synthetic_keyframes(4, session="other"), np.random.default_rng(1)),
                                 source_note="x")
    assert snapshot(m) == before
    with pytest.raises(InputError, match="source='optimized'"):
        mp.write_optimized_poses(m, {mp.pose_key(kfs[0]): mp.MapPose(np.eye(4), np.eye(6), "odometry")},
                                 source_note="x")


def _damage(db_path, statement, *args):
    db = sqlite3.connect(db_path)
    with db:
        db.execute(statement, args)
    db.close()


def test_verify_names_a_damaged_pose_row(tmp_path):
    kfs = synthetic_keyframes(3)
    m = _live(tmp_path / "m", kfs)  # a live map: no checksum hides the row check
    mp.write_optimized_poses(m, _optimized(kfs, np.random.default_rng(2)), source_note="x")
    bent = np.eye(4)
    bent[0, 0] = 3.0  # not a rotation
    _damage(m / "log.sqlite", "UPDATE optimized_poses SET pose = ? WHERE keyframe_id = 1", bent.tobytes())
    verdict = verify_map(m)
    assert not verdict.ok and "optimized_poses row 1" in verdict.message and "rigid" in verdict.message
    _damage(m / "log.sqlite", "UPDATE optimized_poses SET pose = ?, keyframe_id = 7 WHERE keyframe_id = 1",
            np.eye(4).tobytes())
    assert "does not hold" in verify_map(m).message
    _damage(m / "log.sqlite", "DELETE FROM optimized_poses WHERE keyframe_id = 7")
    assert "holds 2 rows but its meta row says 3" in verify_map(m).message
    _damage(m / "log.sqlite", "UPDATE meta SET value = ? WHERE key = 'optimized_poses'",
            json.dumps({"version": 9, "count": 2, "source_note": "", "written_ns": 0}))
    assert "version 9" in verify_map(m).message
    # a snapshot map: the manifest's checksum of map.sqlite catches the edit before the rows are read
    s = _snap(tmp_path / "s", kfs)
    mp.write_optimized_poses(s, _optimized(kfs, np.random.default_rng(2)), source_note="x")
    _damage(s / "map.sqlite", "UPDATE optimized_poses SET covariance = ? WHERE keyframe_id = 0", (-np.eye(6)).tobytes())
    assert not verify_map(s).ok and "checksum" in verify_map(s).message


class _Fixed:
    model_id = MODEL
    global_dim = DIM


def _detector():
    return LoopClosureDetector(config_from_flat({"map.local_encoding": "float32"}), _Fixed())


def test_detector_queues_poses_into_its_live_map_and_loads_them_back(tmp_path):
    kfs = synthetic_keyframes(4)
    snap = _snap(tmp_path / "snap", kfs)
    poses = _optimized(kfs, np.random.default_rng(4))
    mp.write_optimized_poses(snap, poses, source_note="map optimize")
    det = _detector()
    det.load_map(snap)
    assert _same(det.optimized_poses, poses)
    assert {p.source for p in det.keyframe_map_poses().values()} == {"optimized"}
    det.attach_store(tmp_path / "live")  # the node's live map; it owns it from now on
    newer = _optimized(kfs[:2], np.random.default_rng(5))
    det.store_optimized_poses(newer, source_note="pose_graph_node")
    with pytest.raises(MapStoreError, match=IN_USE):  # nobody else writes while the node owns it
        mp.write_optimized_poses(tmp_path / "live", poses, source_note="x")
    assert _same(mp.read_optimized_poses(tmp_path / "live"), newer)  # durable as soon as the queue wrote it
    det.detach_store()
    again = _detector()
    again.attach_store(tmp_path / "live")
    assert _same(again.optimized_poses, newer)
    got = again.keyframe_map_poses()
    assert got[mp.pose_key(kfs[3])].source == "odometry" and got[mp.pose_key(kfs[0])].source == "optimized"
    again.detach_store()
    again.save_map(tmp_path / "saved")  # a snapshot from memory keeps them too
    assert _same(mp.read_optimized_poses(tmp_path / "saved"), newer)


def test_marginal_covariance_is_turned_into_the_ros_convention():
    """GTSAM's right perturbation T exp(xi), xi = (rot, trans) in the body, sampled; errors measured as a
    map-frame position and a rotation about the map's axes."""
    rng = np.random.default_rng(7)
    T = _pose(rng, scale=3.0)
    A = rng.normal(size=(6, 6)) * 0.05
    tangent = A @ A.T
    xi = rng.standard_normal((20000, 6)) @ np.linalg.cholesky(tangent).T
    dR = Rotation.from_rotvec(xi[:, :3]).as_matrix()
    R = T[:3, :3] @ dR
    # Pose3.expmap's translation is J_l(rot) trans; to first order in xi it is trans (the convention's point)
    t = T[:3, 3] + np.einsum("ij,nj->ni", T[:3, :3], xi[:, 3:])
    errors = np.c_[t - T[:3, 3], Rotation.from_matrix(R @ T[:3, :3].T).as_rotvec()]
    got = mp.covariance_from_tangent(T, tangent)
    sig = np.sqrt(np.diag(got))
    assert np.allclose(np.cov(errors.T) / np.outer(sig, sig), got / np.outer(sig, sig), atol=0.05)
