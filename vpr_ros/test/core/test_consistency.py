"""Temporal consistency by place (core/keyframes.py ConsistencyFilter, verify.consistency_by_place):
matches that alternate between laps of one place agree, unrelated places do not, poses count."""

import numpy as np

from vpr_ros.core.config import VerifyConfig
from vpr_ros.core.keyframes import ConsistencyFilter
from vpr_ros.core.types import Keyframe

N = 20  # keyframes per lap: lap k holds ids k*N .. k*N + N-1 of one stream, place i = id % N


def _kf(kf_id, session="s", position=None, robot="robot"):
    pose = None
    if position is not None:
        pose = np.eye(4)
        pose[:3, 3] = position
    return Keyframe(id=kf_id, stamp_ns=kf_id, robot_id=robot, session_id=session,
                    global_=np.zeros(4, np.float32), pose=pose)


def _lap2(filt, places=range(N)):
    """Lap 2 revisits lap 1 place by place; every consistent match is published (confirm)."""
    for i in places:
        if filt.update(_kf(N + i), _kf(i)) >= filt.config.temporal_consistency:
            filt.confirm()


def _lap3_alternating(filt, places=range(N)):
    """Lap 3's best matches alternate between lap 1 and lap 2 of the same place; the streaks.

    It starts without a streak (lap 1's last and lap 2's first ids are adjacent in the stream)."""
    filt.update(2 * N - 1, None)
    return [filt.update(_kf(2 * N + i), _kf(i if i % 2 == 0 else N + i)) for i in places]


def test_alternating_laps_of_one_place_are_consistent():
    filt = ConsistencyFilter(VerifyConfig())
    _lap2(filt)
    assert _lap3_alternating(filt) == list(range(1, N + 1))


def test_old_rule_breaks_on_alternating_laps():
    filt = ConsistencyFilter(VerifyConfig(consistency_by_place=False))
    _lap2(filt)
    assert _lap3_alternating(filt) == [1] * N
    assert not filt._links  # the old rule keeps no places


def test_alternating_laps_need_the_verified_links():
    # Without lap 2's published loops nothing says a lap-2 keyframe is a lap-1 place.
    filt = ConsistencyFilter(VerifyConfig())
    for i in range(N):
        filt.update(_kf(N + i), _kf(i))  # matched, never published (no confirm)
    filt.reset(keep_places=True)
    assert _lap3_alternating(filt) == [1] * N


def test_links_reach_over_two_laps():
    # Lap 4 alternates between lap 3 (linked to lap 2, which is linked to lap 1) and lap 1.
    filt = ConsistencyFilter(VerifyConfig())
    _lap2(filt)
    filt.update(2 * N - 1, None)
    for i in range(N):  # lap 3 matched lap 2 only
        if filt.update(_kf(2 * N + i), _kf(N + i)) >= 2:
            filt.confirm()
    filt.update(3 * N - 1, None)
    streaks = [filt.update(_kf(3 * N + i), _kf(i if i % 2 == 0 else 2 * N + i)) for i in range(N)]
    assert streaks == list(range(1, N + 1))


def test_unrelated_places_are_not_consistent():
    filt = ConsistencyFilter(VerifyConfig())
    _lap2(filt)
    # Successive lap-3 matches of places 3, 12, 5, 15 ...: far apart in every lap.
    far = [(2 * N + k, m) for k, m in enumerate([3, N + 12, 5, 15, N + 8, 0])]
    assert [filt.update(_kf(q), _kf(m)) for q, m in far] == [1] * len(far)
    # Another session's keyframe with the same id is another place.
    filt.reset()
    assert filt.update(_kf(100), _kf(4)) == 1
    assert filt.update(_kf(101), _kf(5, session="other")) == 1
    # A gap in the query keyframes breaks the streak even at the same place.
    assert filt.update(_kf(103), _kf(5, session="other")) == 1


def test_close_poses_of_one_stream_are_consistent():
    cfg = VerifyConfig(consistency_radius_m=2.0)
    filt = ConsistencyFilter(cfg)
    # ids 10 and 90 of one stream (laps 1 and 5 of a loop), 1.5 m apart in its odometry
    assert filt.update(_kf(200), _kf(10, position=(5.0, 0.0, 0.0))) == 1
    assert filt.update(_kf(201), _kf(90, position=(6.5, 0.0, 0.0))) == 2
    # 3 m away: not the same place
    assert filt.update(_kf(202), _kf(40, position=(9.5, 0.0, 0.0))) == 1
    # close poses in another session (another odometry frame) mean nothing
    assert filt.update(_kf(203), _kf(41, session="other", position=(9.5, 0.0, 0.0))) == 1
    # one side without a pose: only ids count
    assert filt.update(_kf(204), _kf(90)) == 1


def test_pose_rule_off():
    for cfg in (VerifyConfig(consistency_radius_m=0.0), VerifyConfig(consistency_by_place=False)):
        filt = ConsistencyFilter(cfg)
        filt.update(_kf(200), _kf(10, position=(5.0, 0.0, 0.0)))
        assert filt.update(_kf(201), _kf(90, position=(5.5, 0.0, 0.0))) == 1


def test_pose_closeness_through_a_linked_place():
    # Lap 2 (session s2, another odometry frame) matched lap 1 (session s1) at 10; lap 3 of s1
    # alternates: s2's keyframe 10, then s1's keyframe 55, which lies 1 m from s1's keyframe 10.
    filt = ConsistencyFilter(VerifyConfig())
    filt.update(_kf(10, session="s2"), _kf(10, session="s1", position=(4.0, 0.0, 0.0)))
    filt.update(_kf(11, session="s2"), _kf(11, session="s1", position=(5.0, 0.0, 0.0)))
    filt.confirm()
    filt.reset(keep_places=True)
    assert filt.update(_kf(70, session="s3"), _kf(10, session="s2")) == 1
    assert filt.update(_kf(71, session="s3"), _kf(55, session="s1", position=(4.5, 1.0, 0.0))) == 2


def test_reset_forgets_places_unless_kept():
    filt = ConsistencyFilter(VerifyConfig())
    _lap2(filt)
    filt.reset(keep_places=True)
    assert _lap3_alternating(filt, range(4)) == [1, 2, 3, 4]
    filt.reset()
    assert _lap3_alternating(filt, range(4)) == [1, 1, 1, 1]


def test_integer_query_ids_still_work():
    filt = ConsistencyFilter(VerifyConfig())
    assert [filt.update(q, _kf(m)) for q, m in [(5, 1), (6, 2), (7, 9), (9, 10)]] == [1, 2, 1, 1]
    filt.confirm()  # nothing to link: the queries were ids only
    assert not filt._links
