"""Property: a keyframe never matches too-recent keyframes of its own robot and session."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from vpr_ros.core.config import DetectorConfig, config_from_flat
from vpr_ros.core.detector import LoopClosureDetector
from vpr_ros.core.keyframes import is_excluded
from vpr_ros.core.types import Descriptors, Keyframe

NS = 1_000_000_000


class ConstantModel:
    """Every frame looks the same: without exclusion every keyframe would match its predecessor."""

    model_id = "const@test"
    global_dim = 8

    def extract(self, images):
        g = np.ones((len(images), 8), np.float32) / np.sqrt(8)
        loc = np.ones((len(images), 2, 2, 4), np.float32) / 2
        return Descriptors(g, loc)


@settings(max_examples=40, deadline=None)
@given(gaps=st.lists(st.floats(0.01, 3.0), min_size=2, max_size=40),
       min_gap=st.floats(0.0, 10.0), last_n=st.integers(0, 5))
def test_candidates_never_too_recent(gaps, min_gap, last_n):
    cfg = config_from_flat({"detector.min_loop_gap_sec": min_gap, "detector.exclude_last_n": last_n,
                            "index.top_k": 50, "verify.min_matches": 0,
                            "verify.temporal_consistency": 1})
    det = LoopClosureDetector(cfg, ConstantModel())
    stamp = 0
    g = np.ones(8, np.float32)
    loc = np.ones((2, 2, 4), np.float32) / 2
    for gap in gaps:
        stamp += int(gap * NS)
        res = det.process_descriptors(stamp, g, loc)
        q = res.keyframe
        allowed = [k for k in det.keyframes[:-1]
                   if q.stamp_ns - k.stamp_ns >= round(min_gap * NS) and q.id - k.id > last_n]
        got = {det.keyframe(v.candidate.keyframe_id).id for v in res.verifications}
        assert got == {k.id for k in allowed}
        for loop in res.loop_closures:
            assert q.stamp_ns - loop.match_stamp_ns >= round(min_gap * NS)
            assert q.id - loop.match_id > last_n


@settings(max_examples=60, deadline=None)
@given(dt_ns=st.integers(-100 * NS, 100 * NS), did=st.integers(-10, 10), same_robot=st.booleans(),
       same_session=st.booleans(), gap=st.floats(0, 50), last_n=st.integers(0, 10))
def test_is_excluded_rule(dt_ns, did, same_robot, same_session, gap, last_n):
    q = Keyframe(100, 1000 * NS, "r", "s", np.ones(2, np.float32))
    other = Keyframe(100 - did, 1000 * NS - dt_ns, "r" if same_robot else "x",
                     "s" if same_session else "y", np.ones(2, np.float32))
    cfg = DetectorConfig(min_loop_gap_sec=gap, exclude_last_n=last_n)
    expected = same_robot and same_session and (dt_ns < round(gap * NS) or did <= last_n)
    assert is_excluded(q, other, cfg) == expected


def test_other_sessions_are_never_excluded(tmp_path):
    det = LoopClosureDetector(config_from_flat({"detector.session_id": "s2", "verify.min_matches": 0,
                                                "verify.temporal_consistency": 1}), ConstantModel())
    other = LoopClosureDetector(config_from_flat({"detector.session_id": "s1"}), ConstantModel())
    g, loc = np.ones(8, np.float32), np.ones((2, 2, 4), np.float32) / 2
    other.process_descriptors(5 * NS, g, loc)
    other.save_map(tmp_path / "s1")
    assert det.load_map(tmp_path / "s1") == 1
    # Same stamp as the saved keyframe, far inside min_loop_gap_sec, yet another session: a loop.
    res = det.process_descriptors(5 * NS, g, loc)
    assert det.config.detector.min_loop_gap_sec > 0
    assert [v.candidate.keyframe_id for v in res.verifications] == [0]
    assert res.loop_closures and res.loop_closures[0].match_session_id == "s1"
    assert res.loop_closures[0].query_id == 0  # numbering of a new session starts at 0
