"""The node's map I/O without ROS (nodes/map_services.py MapKeeper): issue 18 classes 1, 5 and 6."""

from __future__ import annotations

import logging
import threading

import pytest

from vpr_ros.core.config import config_from_flat
from vpr_ros.core.detector import LoopClosureDetector
from vpr_ros.core.errors import MapStoreError
from vpr_ros.core.map import live_map
from vpr_ros.core.map.snapshot import load_keyframes, save_keyframes
from vpr_ros.nodes.map_services import MapKeeper

from store_maps import DIM, MODEL, index_writer, snapshot, synthetic_keyframes


class _Model:
    model_id = MODEL
    global_dim = DIM


def _keeper(**flat) -> MapKeeper:
    config = config_from_flat(flat)
    detector = LoopClosureDetector(config, _Model())
    return MapKeeper(detector, threading.Lock(), config.map, logging.getLogger("test"), lambda key: None)


def _feed(keeper: MapKeeper, kfs, t0: int = 0) -> None:
    for i, kf in enumerate(kfs):
        keeper.detector.process_descriptors(t0 + (i + 1) * 10**9, kf.global_, kf.local)


def test_reset_starts_a_new_session_and_keeps_the_live_map(tmp_path):
    """Before: ~/reset replaced the live map at map.save_path by an empty one (the backwards-stamp
    message tells users to call it)."""
    keeper = _keeper(**{"map.save_path": str(tmp_path / "live")})
    assert keeper.start().success
    _feed(keeper, synthetic_keyframes(4))
    result = keeper.reset()
    assert result.success and "session_r1" in result.message
    assert keeper.detector.num_keyframes == 4  # kept in memory: the next keyframes can match them
    _feed(keeper, synthetic_keyframes(3, seed=1), t0=0)  # time went backwards (a bag loop): accepted
    keeper.close()
    back = live_map.MapLog(tmp_path / "live")
    assert [k.session_id for k in back.keyframes] == ["session"] * 4 + ["session_r1"] * 3


def test_a_snapshot_map_as_live_save_path_is_refused_and_kept(tmp_path):
    kfs = synthetic_keyframes(5)
    m = save_keyframes(tmp_path / "m", kfs, MODEL, DIM, index_writer=index_writer(kfs))
    before = snapshot(m)
    keeper = _keeper(**{"map.save_path": str(m)})
    result = keeper.start()
    assert not result.success and "snapshot map" in result.message
    keeper.close()
    assert snapshot(m) == before


def test_a_node_saving_snapshots_owns_its_save_path_until_shutdown(tmp_path):
    m = tmp_path / "m"
    kfs = synthetic_keyframes(2, seed=9)
    save_keyframes(m, kfs, MODEL, DIM, index_writer=index_writer(kfs))
    keeper = _keeper(**{"map.save_path": str(m), "map.append": False})
    assert keeper.start().success
    _feed(keeper, synthetic_keyframes(3))
    for _ in range(2):  # its own saves swap new directories in, and it keeps owning the path
        assert keeper.save(str(m)).success
        with pytest.raises(MapStoreError, match="in use by another writer"):  # e.g. map compact --out m
            save_keyframes(m, kfs, MODEL, DIM, index_writer=index_writer(kfs))
    assert len(load_keyframes(m, MODEL)[1]) == 3
    keeper.close()  # shutdown: the path is free again
    save_keyframes(m, kfs, MODEL, DIM, index_writer=index_writer(kfs))
