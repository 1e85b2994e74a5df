"""Odometry consistency gate: drift model, Mahalanobis tests, and its hook in the detector."""

import math

import numpy as np
import pytest

from conftest import corridor_image
from vpr_ros.core.config import OdometryGateConfig, config_from_flat
from vpr_ros.core.detector import LoopClosureDetector
from vpr_ros.core.errors import ConfigError
from vpr_ros.core.geometry.odometry_gate import OdometryGate, drift_sigmas, motion_increment
from vpr_ros.core.types import Frame

NS = 1_000_000_000


def _pose(x=0.0, y=0.0, yaw_deg=0.0):
    c, s = math.cos(math.radians(yaw_deg)), math.sin(math.radians(yaw_deg))
    p = np.eye(4)
    p[:2, :2] = [[c, -s], [s, c]]
    p[:2, 3] = x, y
    return p


def test_sigma_grows_with_distance_and_rotation():
    cfg = OdometryGateConfig()
    s0 = drift_sigmas(cfg, 0.0, 0.0)
    assert s0 == pytest.approx((cfg.min_sigma_m, math.radians(cfg.min_sigma_deg)))
    far = drift_sigmas(cfg, 100.0, 0.0)
    turned = drift_sigmas(cfg, 0.0, math.pi)
    assert far[0] > s0[0] and far[1] > s0[1]
    assert turned[0] > s0[0] and turned[1] > s0[1]
    assert drift_sigmas(cfg, 200.0, math.pi)[0] > max(far[0], turned[0])


def test_motion_increment_measures_distance_and_angle():
    d, a = motion_increment(_pose(), _pose(3.0, 4.0, 90.0))
    assert d == pytest.approx(5.0) and a == pytest.approx(math.pi / 2)


def test_rejects_a_far_candidate_and_accepts_a_near_one():
    gate = OdometryGate(OdometryGateConfig())
    for key in range(60):  # a straight 59 m corridor, one keyframe per metre
        gate.add(key, _pose(float(key)))
    # Keyframe 59 claims to be at keyframe 0's place: 59 m off after 59 m of travel (sigma ~3.5 m).
    far = gate.check(59, 0)
    assert not far.accepted and far.dof == 3 and far.statistic > far.threshold
    near = gate.check(59, 57)
    assert near.accepted and near.statistic < near.threshold
    # Unknown keys or an odometry gap give no opinion.
    assert gate.check(59, 1000) is None
    gate.add(60, None)
    gate.add(61, _pose(0.0))
    assert gate.check(61, 0) is None


def test_same_offset_passes_after_a_long_drift_but_not_after_a_short_one():
    gate = OdometryGate(OdometryGateConfig())
    offset = 10.0  # metres between the odometry positions of the two keyframes
    short = gate.test(_pose(offset), _pose(), distance_m=20.0, rotation_rad=0.0)
    long_ = gate.test(_pose(offset), _pose(), distance_m=400.0, rotation_rad=2 * math.pi)
    assert not short.accepted and long_.accepted
    assert long_.sigma_m > short.sigma_m


def test_measured_relative_pose_is_tested_in_six_dof():
    gate = OdometryGate(OdometryGateConfig())
    q, m = _pose(1.0, 0.0, 10.0), _pose()
    predicted = np.linalg.solve(m, q)
    ok = gate.test(q, m, 5.0, 0.0, relative_pose=predicted, covariance=np.eye(6) * 1e-4)
    assert ok.accepted and ok.dof == 6 and ok.statistic == pytest.approx(0.0, abs=1e-9)
    flipped = predicted @ _pose(yaw_deg=180.0)  # the camera looks the other way: not the same view
    bad = gate.test(q, m, 5.0, 0.0, relative_pose=flipped)
    assert not bad.accepted
    # Monocular: a wrong translation scale alone must not reject, only the rotation is tested.
    scaled = predicted.copy()
    scaled[:3, 3] *= 40.0
    assert not gate.test(q, m, 5.0, 0.0, relative_pose=scaled).accepted
    mono = gate.test(q, m, 5.0, 0.0, relative_pose=scaled, translation_known=False)
    assert mono.accepted and mono.dof == 3


def test_config_refuses_a_gate_that_rejects_everything():
    with pytest.raises(ConfigError, match="odometry_gate"):
        OdometryGateConfig(min_sigma_m=0.0, translation_drift=0.0, rotation_drift_m_per_rad=0.0)
    with pytest.raises(ConfigError, match="confidence"):
        config_from_flat({"odometry_gate.confidence": 0.1})


def _revisit(tiny_extractor, query_y, enabled=True):
    """Ref frames 0..29 one metre apart, then the same places again; query poses shifted by query_y."""
    det = LoopClosureDetector(config_from_flat({
        "detector.min_loop_gap_sec": 5.0, "verify.min_matches": 30, "verify.temporal_consistency": 1,
        "odometry_gate.enabled": enabled}), tiny_extractor)
    loops, rejected, t = [], 0, 0
    for split, y in (("ref", 0.0), ("query", query_y)):
        for i in range(30):
            step = det.process(Frame(t, corridor_image(split, i), _pose(float(i), y)))
            loops += step.loop_closures
            rejected += step.odometry_rejected
            t += NS // 2
        t += 60 * NS
    return loops, rejected


def test_detector_drops_candidates_odometry_contradicts(tiny_extractor):
    loops, _ = _revisit(tiny_extractor, query_y=0.0)
    revisit = [lp for lp in loops if lp.query_id >= 30]
    assert revisit and all(lp.match_id < 30 for lp in revisit)
    # Odometry says the second pass is 500 m away from the first: no loop may survive the gate.
    far_loops, far_rejected = _revisit(tiny_extractor, query_y=500.0)
    assert not [lp for lp in far_loops if lp.query_id >= 30] and far_rejected > 0
    # The same stream with the gate off keeps them (the gate, not something else, removed them).
    off_loops, off_rejected = _revisit(tiny_extractor, query_y=500.0, enabled=False)
    assert [lp for lp in off_loops if lp.query_id >= 30] and off_rejected == 0
