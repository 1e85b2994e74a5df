"""Evaluation of relocalisation fixes (core/eval/relocalization.py) on hand-made fixes: each metric is
checked against a value worked out by hand, so a wrong convention or count fails."""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np
import pytest

from vpr_ros.core.eval.relocalization import (CHI2_95_6DOF, evaluate_fixes, fix_nees, pose_error_vector,
                                              position_error_m, rotation_error_deg, sees_mapped_place,
                                              summarise_fixes)

S = 10**9


@dataclasses.dataclass(frozen=True)
class _Fix:
    stamp_ns: int
    T_map_base: np.ndarray
    covariance: np.ndarray
    kind: str = "metric"


def _pose(xyz, rotvec_deg=(0.0, 0.0, 0.0)) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = cv2.Rodrigues(np.radians(np.asarray(rotvec_deg, np.float64)))[0]
    T[:3, 3] = xyz
    return T


def test_the_error_is_in_the_map_frame_with_the_rotation_about_its_fixed_axes():
    T_est = _pose([1.0, 2.0, 0.5], (0, 0, 90))  # yawed: body and map axes differ
    dphi = np.radians([2.0, 0.0, 0.0])  # a small rotation about the MAP's x axis
    T_true = T_est.copy()
    T_true[:3, :3] = cv2.Rodrigues(dphi)[0] @ T_est[:3, :3]
    T_true[:3, 3] += [0.1, 0.0, 0.0]  # 10 cm along the map's x
    e = pose_error_vector(T_est, T_true)
    np.testing.assert_allclose(e, [0.1, 0.0, 0.0, *dphi], atol=1e-12)
    assert position_error_m(T_est, T_true) == pytest.approx(0.1)
    assert rotation_error_deg(T_est, T_true) == pytest.approx(2.0)


def test_nees_uses_the_covariance_of_each_axis_in_ros_order():
    T_est = _pose([0.0, 0.0, 0.0], (0, 0, 90))
    T_true = _pose([0.03, 0.0, 0.0], (0, 0, 90))  # 3 cm along map x
    cov = np.diag([0.01 ** 2, 0.1 ** 2, 0.1 ** 2, 1e-4, 1e-4, 1e-4])  # x is precise, y is not
    assert fix_nees(T_est, T_true, cov) == pytest.approx(9.0)  # (0.03 / 0.01)^2
    # the same error along map y, where the covariance is wide: small
    assert fix_nees(T_est, _pose([0.0, 0.03, 0.0], (0, 0, 90)), cov) == pytest.approx(0.09)
    assert fix_nees(T_est, T_true, np.zeros((6, 6))) is None  # cannot be inverted


def test_a_keyframe_sees_a_mapped_place_within_the_radius_and_the_angle():
    maps = [_pose([0.0, 0.0, 0.0]), _pose([5.0, 0.0, 0.0], (0, 0, 90))]
    truth = [_pose([0.8, 0.0, 0.0]), _pose([1.2, 0.0, 0.0]), _pose([5.0, 0.5, 0.0], (0, 0, 70)),
             _pose([5.0, 0.5, 0.0], (0, 0, 50)), None]
    assert sees_mapped_place(truth, maps, radius_m=1.0, max_angle_deg=30.0) == [True, False, True, False, False]
    assert sees_mapped_place(truth, [], radius_m=1.0) == [False] * 5


def _scenario():
    """Six keyframes 1 s apart; the first two see no mapped place. Fixes: one at keyframe 1 (sees
    nothing), the first after seeing the map at keyframe 3 (the second keyframe that sees it), a good
    one at 4, one 0.6 m off at 5 (wrong), and one at a stamp between keyframes (belongs to 4)."""
    stamps = [100 * S + k * S for k in range(6)]
    truth = [_pose([float(k), 0.0, 0.0], (0, 0, 10 * k)) for k in range(6)]
    sees = [False, False, True, True, True, True]
    cov = np.diag([0.01 ** 2] * 3 + [np.radians(0.5) ** 2] * 3)

    def off(k: int, dx: float, dyaw_deg: float = 0.0) -> np.ndarray:
        T = truth[k].copy()
        T[:3, :3] = cv2.Rodrigues(np.radians([0, 0, dyaw_deg]))[0] @ T[:3, :3]
        T[0, 3] += dx
        return T
    fixes = [_Fix(stamps[1], off(1, 0.02), cov), _Fix(stamps[3], off(3, 0.01), cov),
             _Fix(stamps[4], off(4, 0.0, 12.0), cov), _Fix(stamps[5], off(5, 0.6), cov),
             _Fix(stamps[4] + S // 2, off(4, 0.03), cov)]
    return stamps, truth, sees, fixes


def test_fixes_are_matched_to_their_keyframe_and_judged():
    stamps, truth, sees, fixes = _scenario()
    rows = evaluate_fixes(fixes, stamps, truth, sees)
    assert [r.keyframe for r in rows] == [1, 3, 4, 5, 4]
    assert [r.sees_map for r in rows] == [False, True, True, True, True]
    assert [r.wrong for r in rows] == [False, False, True, True, False]  # 12 deg; 0.6 m
    assert rows[1].position_error_m == pytest.approx(0.01)
    assert rows[1].nees == pytest.approx(1.0)  # (0.01 / 0.01)^2
    assert rows[2].rotation_error_deg == pytest.approx(12.0)
    with pytest.raises(ValueError, match="one entry per keyframe"):
        evaluate_fixes(fixes, stamps, truth[:-1], sees)


def test_summary_counts_time_to_first_fix_rate_errors_wrong_and_nees():
    stamps, truth, sees, fixes = _scenario()
    s = summarise_fixes(evaluate_fixes(fixes, stamps, truth, sees), stamps, sees)
    assert s["first_keyframe_seeing_map"] == 2
    assert s["keyframes_to_first_fix"] == 2  # keyframe 2 saw the map, keyframe 3 gave the fix
    assert s["time_to_first_fix_s"] == pytest.approx(1.0)
    assert s["fix_rate"] == pytest.approx(3 / 4)  # keyframes 3, 4, 5 of the four that see the map
    assert s["fixes"] == 5 and s["fixes_where_no_mapped_place_is_seen"] == 1
    assert s["wrong_fixes"] == 2
    assert s["position_error_m"]["median"] == pytest.approx(0.02)
    assert s["position_error_m"]["max"] == pytest.approx(0.6)
    assert s["rotation_error_deg"]["max"] == pytest.approx(12.0)
    expected = [4.0, 1.0, (math.radians(12) / math.radians(0.5)) ** 2, 3600.0, 9.0]
    assert s["nees"]["mean"] == pytest.approx(np.mean(expected))
    assert s["nees"]["inside_95"] == pytest.approx(np.mean(np.asarray(expected) <= CHI2_95_6DOF))
    assert s["kinds"] == {"metric": 5}


def test_summary_without_a_fix_or_without_a_mapped_place():
    stamps, truth, sees, _ = _scenario()
    s = summarise_fixes([], stamps, sees)
    assert s["keyframes_to_first_fix"] is None and s["time_to_first_fix_s"] is None and s["fix_rate"] == 0.0
    assert s["position_error_m"]["median"] is None and s["nees"]["mean"] is None
    none = summarise_fixes([], stamps, [False] * 6)
    assert none["fix_rate"] is None and none["first_keyframe_seeing_map"] is None
