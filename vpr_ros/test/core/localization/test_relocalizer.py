"""The relocaliser on SIMULATED (RENDERED from real photographs) RGB-D views of a mapped room: a fix
from agreeing candidates is right to centimetres; look-alikes, single pieces of evidence, imprecise or
single-camera poses and keyframes without map poses are refused with their reason."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from reloc_scene import mapped_detector, query_frame, scene
from vpr_ros.core.config import config_from_flat
from vpr_ros.core.localization.relocalizer import REFUSAL_REASONS, Fix, Refusal, Relocalizer
from reloc_scene import BASE

CONTINUOUS = {"relocalization.mode": "continuous", "relocalization.min_interval_sec": 0.0}


def _errors(T_est, T_true):
    E = np.linalg.inv(T_true) @ T_est
    return float(np.linalg.norm(T_est[:3, 3] - T_true[:3, 3])), float(np.degrees(Rotation.from_matrix(E[:3, :3]).magnitude()))


def _relocalizer(det, overrides=None):
    return Relocalizer(config_from_flat({**BASE, **CONTINUOUS, **(overrides or {})}), det)


def test_two_agreeing_candidates_give_a_fix_on_the_first_keyframe(tiny_extractor):
    s = scene()
    det = mapped_detector(s, tiny_extractor)
    reloc = _relocalizer(det)
    frame = query_frame(s, 0, 100.0)
    fix = reloc.step(det.process(frame))
    assert isinstance(fix, Fix), fix
    pos_err, rot_err = _errors(fix.T_map_base, s.query_views[0][0])
    assert pos_err < 0.05 and rot_err < 1.0
    assert (fix.frame_id, fix.child_frame_id, fix.kind, fix.confirmed_by) == ("map", "base_link", "metric", "candidates")
    assert fix.stamp_ns == frame.stamp_ns and len(fix.matched_keyframes) >= 2 == len(set(fix.matched_keyframes[:2]))
    assert all(k.startswith("mapper/day1/") for k in fix.matched_keyframes) and min(fix.inliers) >= 10
    cov = fix.covariance
    assert cov.shape == (6, 6) and np.allclose(cov, cov.T) and np.linalg.eigvalsh(cov).min() > 0
    # the map -> odom transform: odometry is the identity at this first frame of the kidnapped start
    np.testing.assert_allclose(fix.T_map_odom @ frame.pose, fix.T_map_base, atol=1e-12)
    np.testing.assert_allclose(fix.position, fix.T_map_base[:3, 3])
    assert reloc.counts["fixes"] == 1 and sum(reloc.counts[r] for r in REFUSAL_REASONS) == 0


def test_look_alike_places_in_the_map_are_refused(tiny_extractor):
    s = scene()
    det = mapped_detector(s, tiny_extractor, copies_shift_m=(0.0, 20.0))  # the same room twice, 20 m apart
    reloc = _relocalizer(det)
    outcomes = [reloc.step(det.process(query_frame(s, k, 100.0 + k))) for k in range(3)]
    assert not any(isinstance(o, Fix) for o in outcomes)
    assert [o.reason for o in outcomes] == ["disagreement"] * 3
    assert "20." in outcomes[0].detail and reloc.counts["disagreement"] == 3


def test_evidence_on_one_plane_is_refused_until_a_second_surface_is_required_no_more(tiny_extractor):
    """Only the wall the views face: a picture seen alone. Candidates agree (the pose to the picture is
    right) but the picture could hang in a place the map never saw: refused single_surface."""
    s = scene("back")
    det = mapped_detector(s, tiny_extractor)
    reloc = _relocalizer(det)
    # views 1-3 along the wall: candidates and earlier keyframes agree, all on the one plane
    outcomes = [reloc.step(det.process(query_frame(s, k, 100.0 + k))) for k in (1, 2, 3)]
    assert [getattr(o, "reason", o) for o in outcomes] == ["single_surface"] * 3, outcomes
    assert "1 plane(s)" in outcomes[0].detail and len(outcomes[0].matched_keyframes) >= 2
    assert reloc.counts["single_surface"] == 3 and reloc.counts["fixes"] == 0
    det = mapped_detector(s, tiny_extractor)
    fix = _relocalizer(det, {"relocalization.min_surfaces": 1}).step(det.process(query_frame(s, 1, 101.0)))
    assert isinstance(fix, Fix) and fix.confirmed_by == "candidates", fix
    assert _errors(fix.T_map_base, s.query_views[1][0])[0] < 0.05


def test_one_candidate_is_confirmed_by_the_next_keyframe_through_odometry(tiny_extractor):
    s = scene()
    det = mapped_detector(s, tiny_extractor)
    reloc = _relocalizer(det, {"relocalization.max_candidates": 1})
    first = reloc.step(det.process(query_frame(s, 0, 100.0)))
    assert isinstance(first, Refusal) and first.reason == "unconfirmed"
    second = reloc.step(det.process(query_frame(s, 1, 101.0)))
    assert isinstance(second, Fix) and second.confirmed_by == "odometry" and len(second.matched_keyframes) == 2
    pos_err, rot_err = _errors(second.T_map_base, s.query_views[1][0])
    assert pos_err < 0.05 and rot_err < 1.0


@pytest.mark.parametrize("case", ["odometry_off", "odometry_wrong"])
def test_consecutive_keyframes_do_not_confirm_without_agreeing_odometry(tiny_extractor, case):
    s = scene()
    det = mapped_detector(s, tiny_extractor)
    window = {"odometry_off": 0, "odometry_wrong": 2}[case]
    reloc = _relocalizer(det, {"relocalization.max_candidates": 1, "relocalization.odometry_window": window})
    jump = np.eye(4)
    jump[:3, 3] = [0.6, 0.0, 0.0]  # odometry says the robot moved 0.6 m more than it did
    reloc.step(det.process(query_frame(s, 0, 100.0)))
    second = reloc.step(det.process(query_frame(s, 1, 101.0, odom_error=jump if case == "odometry_wrong" else None)))
    expected = {"odometry_off": "unconfirmed", "odometry_wrong": "disagreement"}[case]
    assert isinstance(second, Refusal) and second.reason == expected, second


def test_single_camera_poses_are_refused_unless_configured(tiny_extractor):
    s = scene()
    det = mapped_detector(s, tiny_extractor, depth=False)  # PnP needs the map's depth; the query's is not used
    reloc = _relocalizer(det)
    off = reloc.step(det.process(query_frame(s, 0, 100.0, depth=False)))
    assert isinstance(off, Refusal) and off.reason == "single_camera_off", off
    det = mapped_detector(s, tiny_extractor, depth=False)
    # max_candidates 5: which of the top candidates the essential estimator rejects (non_rigid, too few
    # inliers) is the estimator's business; this test is about what the relocaliser does with the rest
    reloc = _relocalizer(det, {"relocalization.single_camera": True, "relocalization.single_camera_sigma_m": 1.5,
                               "relocalization.odometry_window": 3, "relocalization.max_candidates": 5})
    outcomes = {k: reloc.step(det.process(query_frame(s, k, 100.0 + k, depth=False))) for k in (0, 3)}
    fixes = [(k, o) for k, o in outcomes.items() if isinstance(o, Fix)]
    assert fixes, outcomes  # (else: candidates whose rotations disagree, or no pose)
    poses = det.keyframe_map_poses()
    for k, fix in fixes:
        assert fix.kind == "single_camera"
        robot, session, kf_id = fix.matched_keyframes[0].split("/")
        match = poses[(robot, session, int(kf_id))]
        np.testing.assert_allclose(fix.position, match.T_map_base[:3, 3])  # the matched keyframe's position ...
        assert np.sqrt(np.linalg.eigvalsh(fix.covariance[:3, :3]).min()) >= 1.5 - 1e-9  # ... with the sigma that says so
        assert _errors(fix.T_map_base, s.query_views[k][0])[1] < 2.0  # the rotation is measured


def test_imprecise_poses_and_keyframes_without_map_pose_are_refused(tiny_extractor):
    s = scene()
    det = mapped_detector(s, tiny_extractor)
    tight = _relocalizer(det, {"relocalization.max_position_sigma_m": 0.001})
    out = tight.step(det.process(query_frame(s, 0, 100.0)))
    assert isinstance(out, Refusal) and out.reason == "covariance_too_large" and "m /" in out.detail
    det = mapped_detector(s, tiny_extractor)
    poses = det.keyframe_map_poses()
    only_first = {k: v for k, v in poses.items() if k[2] == 6}  # a keyframe the query does not match
    reloc = Relocalizer(config_from_flat({**BASE, **CONTINUOUS}), det, only_first)
    out = reloc.step(det.process(query_frame(s, 0, 100.0)))
    assert isinstance(out, Refusal) and out.reason == "no_map_pose", out
    assert reloc.counts["no_map_pose"] == 1


def test_nothing_to_say_without_a_keyframe_or_a_map_candidate(tiny_extractor):
    s = scene()
    det = mapped_detector(s, tiny_extractor, {"keyframes.min_gap_sec": 0.5})
    reloc = _relocalizer(det)
    assert isinstance(reloc.step(det.process(query_frame(s, 0, 100.0))), Fix)
    assert reloc.step(det.process(query_frame(s, 1, 100.2))) is None  # 0.2 s later: not a keyframe
    reloc.set_map_poses({})  # no loaded map: no candidate counts
    assert reloc.step(det.process(query_frame(s, 2, 110.0))) is None
    assert reloc.counts["fixes"] == 1 and sum(reloc.counts[r] for r in REFUSAL_REASONS) == 0


def test_the_fix_covariance_is_local_by_default_and_adds_the_map_pose_with_the_map_option(tiny_extractor):
    """local: relative to the matched keyframe's stored pose (the measurement only); map: plus that pose's
    own covariance moved to the query by first order (J cov_map J^T, position in the map frame)."""
    s = scene()
    det = mapped_detector(s, tiny_extractor)
    frame = query_frame(s, 0, 100.0)
    step = det.process(frame)
    local = _relocalizer(det).step(step)
    wide = _relocalizer(det, {"relocalization.map_pose_covariance": "map"}).step(step)
    assert isinstance(local, Fix) and isinstance(wide, Fix)
    assert local.matched_keyframes == wide.matched_keyframes
    np.testing.assert_allclose(local.T_map_base, wide.T_map_base)
    key = tuple(local.matched_keyframes[0].split("/"))
    mp = det.keyframe_map_poses()[(key[0], key[1], int(key[2]))]
    d = local.T_map_base[:3, 3] - mp.T_map_base[:3, 3]
    J = np.eye(6)
    J[:3, 3:] = -np.array([[0, -d[2], d[1]], [d[2], 0, -d[0]], [-d[1], d[0], 0]])
    np.testing.assert_allclose(wide.covariance - local.covariance, J @ mp.covariance @ J.T, rtol=1e-6, atol=1e-12)
    assert np.trace(mp.covariance) > 0  # the map option really adds something here
