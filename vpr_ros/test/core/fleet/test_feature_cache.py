"""Other robots' fetched local features stay within their memory budget, oldest dropped first."""

from __future__ import annotations

import numpy as np

from vpr_ros.core.fleet.feature_cache import FetchedFeatures
from vpr_ros.core.types import Keyframe


def _remote(i: int, nbytes: int) -> Keyframe:
    return Keyframe(id=i, stamp_ns=i, robot_id="rb", session_id="s", global_=np.ones(4, np.float32),
                    local=np.zeros(nbytes // 4, np.float32))


def test_features_fetched_longest_ago_are_dropped_beyond_the_budget():
    cache = FetchedFeatures(budget_bytes=3000)
    kfs = [_remote(i, 1000) for i in range(5)]
    dropped = [cache.add(kf) for kf in kfs]
    assert dropped[:3] == [[], [], []] and dropped[3] == [kfs[0]] and dropped[4] == [kfs[1]]
    assert [kf.local is None for kf in kfs] == [True, True, False, False, False]
    assert cache.bytes == 3000 and len(cache) == 3 and cache.evicted == 2
    # Fetched again later (a candidate again): counted once, as the newest.
    kfs[0].local = np.zeros(250, np.float32)
    assert cache.add(kfs[0]) == [kfs[2]] and cache.bytes == 3000


def test_a_keyframe_over_the_whole_budget_is_kept_for_the_query_that_needs_it():
    cache = FetchedFeatures(budget_bytes=100)
    small, big = _remote(0, 40), _remote(1, 400)
    cache.add(small)
    assert cache.add(big) == [small] and big.local is not None and cache.bytes == 400
    assert cache.add(_remote(2, 0)) == [big]  # an empty map still replaces the over-budget one
