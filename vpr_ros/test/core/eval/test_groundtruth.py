"""Ground truth from poses and from VPR-Bench index files."""

import numpy as np
import pytest

from conftest import CORRIDOR
from vpr_ros.core.errors import InputError
from vpr_ros.core.eval.groundtruth import (Exclusion, IndexGroundTruth, KeyframeRecord, PoseGroundTruth,
                                           load_vprbench_gt)

NS = 1_000_000_000


def rec(i, t_sec, x=None, session="s", frame=None, robot="r"):
    pos = None if x is None else np.array([x, 0.0, 0.0])
    return KeyframeRecord(robot, session, i, int(t_sec * NS), i if frame is None else frame, pos)


def test_pose_ground_truth_radius_and_exclusion():
    gt = PoseGroundTruth(2.0, Exclusion(min_loop_gap_sec=10.0))
    old, query = rec(0, 0.0, x=0.0), rec(9, 30.0, x=1.5)
    assert gt.is_true(query, old)
    assert not gt.is_true(query, rec(1, 1.0, x=3.6))           # 2.1 m away: too far
    assert not gt.is_true(query, rec(8, 25.0, x=1.5))          # same place but inside the window
    assert gt.is_true(query, rec(8, 25.0, x=1.5, session="other"))  # other sessions never excluded
    assert not gt.is_true(query, rec(2, 2.0))                  # no pose, no ground truth
    assert gt.has_true(query, [rec(1, 1.0, x=5.0), old])
    assert not gt.has_true(query, [rec(1, 1.0, x=5.0), rec(8, 25.0, x=1.5)])
    assert not gt.has_true(rec(9, 30.0), [old])


def test_exclusion_last_n():
    ex = Exclusion(min_loop_gap_sec=0.0, exclude_last_n=3)
    q = rec(10, 100.0)
    assert ex.excluded(q, rec(7, 10.0)) and not ex.excluded(q, rec(6, 10.0))
    assert ex.excluded(q, q)
    with pytest.raises(InputError, match="positive"):
        PoseGroundTruth(0.0)


def test_index_ground_truth_multi_session():
    gt = IndexGroundTruth({0: [0, 1], 1: [0, 1, 2]}, query_sessions={"s2"}, ref_sessions={"s1"})
    q1 = rec(1, 100.0, session="s2")
    assert gt.is_true(q1, rec(2, 0.2, session="s1"))
    assert not gt.is_true(q1, rec(3, 0.3, session="s1"))
    assert not gt.is_true(q1, rec(0, 99.0, session="s2"))      # own session is not the reference
    assert not gt.is_true(rec(1, 1.0, session="s1"), rec(1, 0.1, session="s1"))
    assert gt.has_true(q1, [rec(5, 0.5, session="s1"), rec(2, 0.2, session="s1")])
    assert not gt.has_true(q1, [rec(5, 0.5, session="s1")])
    assert not gt.has_true(rec(7, 100.0, session="s2"), [rec(0, 0.0, session="s1")])  # no gt row


def test_index_ground_truth_single_stream_offsets_and_window():
    # frames 0..9 are the reference pass, 10.. the query pass; 1 s per frame, 5 s window
    gt = IndexGroundTruth({0: [0], 3: [2, 3]}, query_offset=10, exclusion=Exclusion(5.0))
    assert gt.is_true(rec(13, 13.0), rec(3, 3.0))
    assert not gt.is_true(rec(3, 3.0), rec(0, 0.0))       # a reference frame is no query
    assert not gt.is_true(rec(13, 13.0), rec(12, 12.0))   # query->query is not in the ground truth
    near = IndexGroundTruth({0: [0]}, query_offset=1, exclusion=Exclusion(5.0))
    assert not near.is_true(rec(1, 1.0), rec(0, 0.0))     # true place, but inside the window


def test_load_corridor_ground_truth():
    pairs = load_vprbench_gt(CORRIDOR / "ground_truth_new.npy")
    assert len(pairs) == 111
    assert pairs[0] == {0, 1, 2} and pairs[110] == {108, 109, 110}
    assert all(q in refs for q, refs in pairs.items())


def test_load_bad_ground_truth(tmp_path):
    with pytest.raises(InputError, match="cannot read"):
        load_vprbench_gt(tmp_path / "missing.npy")
    np.save(tmp_path / "flat.npy", np.arange(4))
    with pytest.raises(InputError, match="rows of"):
        load_vprbench_gt(tmp_path / "flat.npy")
