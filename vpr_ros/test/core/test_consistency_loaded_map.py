"""Consistency by place after loading a map (issue 20): the loops stored with a map (its loops table)
link their keyframes as one place, as loops confirmed live do, so a new lap whose best matches
alternate between the map's laps 1 and 2 of one place is consistent from its first keyframe on."""

from __future__ import annotations

import numpy as np
import pytest

from store_maps import DIM, MODEL, index_writer, synthetic_keyframes
from vpr_ros.core.config import config_from_flat
from vpr_ros.core.detector import LoopClosureDetector
from vpr_ros.core.map import live_map_dirs
from vpr_ros.core.map.snapshot import save_keyframes
from vpr_ros.core.types import Keyframe, LoopClosure

N = 12  # keyframes per lap: the map holds lap 1 (ids 0..N-1) and lap 2 (ids N..2N-1) of stream r1/s1
FP = {"model_id": MODEL, "weights_digest": "test", "preprocessing": None}


class FixedExtractor:
    model_id = MODEL
    global_dim = DIM


def _laps_and_loops() -> tuple[list[Keyframe], list[LoopClosure]]:
    kfs = synthetic_keyframes(2 * N, session="s1", robot="r1")
    for kf in kfs:  # no poses: only the stored loops can say that lap 2 is lap 1's place
        kf.pose = None
    loops = [LoopClosure(N + i, (N + i) * 10**9, "r1", "s1", i, i * 10**9, "r1", "s1", 0.9, 0, "mnn", 150, 400, 0,
                         150.0, 2, MODEL, DIM) for i in range(N)]
    return kfs, loops


def _lap3_streaks(det: LoopClosureDetector) -> list[int]:
    """Feed the consistency rule lap 3 of a new stream whose matches alternate between the map's laps."""
    laps = {kf.id: kf for kf in det.keyframes if kf.session_id == "s1"}
    streaks = []
    for i in range(N):
        query = Keyframe(id=i, stamp_ns=(1000 + i) * 10**9, robot_id="r1", session_id="live",
                         global_=np.zeros(DIM, np.float32))
        streaks.append(det._consistency.update(query, laps[i if i % 2 == 0 else N + i]))
    return streaks


def _detector(**settings: object) -> LoopClosureDetector:
    cfg = config_from_flat({"detector.session_id": "live", "detector.robot_id": "r1", **settings})
    return LoopClosureDetector(cfg, FixedExtractor())


@pytest.mark.parametrize("kind", ["snapshot", "live map"])
def test_loops_of_a_loaded_map_are_same_place_links(tmp_path, kind):
    kfs, loops = _laps_and_loops()
    path = tmp_path / "map"
    if kind == "snapshot":
        save_keyframes(path, kfs, MODEL, DIM, index_writer(kfs), loops=loops)
    else:
        log = live_map_dirs.open_for_append(path, FP, DIM, "float32")
        for kf in kfs:
            log.append(kf)
        log.append_loops(loops)
        log.close()
    det = _detector()
    assert det.load_map(path) == 2 * N
    assert _lap3_streaks(det) == list(range(1, N + 1))
    # The same map attached as the live map to continue (the node's map.path) links them too.
    if kind == "live map":
        cont = _detector()
        assert cont.attach_store(path) == 2 * N
        assert _lap3_streaks(cont) == list(range(1, N + 1))
        cont.detach_store()


def test_without_stored_loops_or_by_place_the_laps_do_not_agree(tmp_path):
    kfs, loops = _laps_and_loops()
    save_keyframes(tmp_path / "bare", kfs, MODEL, DIM, index_writer(kfs))  # a map without its loops
    save_keyframes(tmp_path / "full", kfs, MODEL, DIM, index_writer(kfs), loops=loops)
    bare = _detector()
    bare.load_map(tmp_path / "bare")
    assert _lap3_streaks(bare) == [1] * N
    old_rule = _detector(**{"verify.consistency_by_place": False})
    old_rule.load_map(tmp_path / "full")
    assert _lap3_streaks(old_rule) == [1] * N
