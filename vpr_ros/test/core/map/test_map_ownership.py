"""One writer per map (core/map/ownership.py) and the live map's write queue (core/detector_map.py):
issue 18 classes 1, 6 and 10 (3 and 2: test_full_disk.py)."""

from __future__ import annotations

import pytest

from store_maps import DIM, MODEL, index_writer, snapshot, synthetic_keyframes
from test_map_log import FP, _detector, _log
from vpr_ros.core.errors import MapStoreError
from vpr_ros.core.map import live_map, live_map_dirs
from vpr_ros.core.map.ownership import DirLock
from vpr_ros.core.map.snapshot import check_save_target, load_keyframes, save_keyframes

IN_USE = "is in use by another writer"


def test_every_writer_is_refused_while_a_node_appends_and_nothing_is_lost(tmp_path):
    """Before: map compact|merge --out, replay --map-save and another node's ~/save_map replaced a map a
    node was appending to (its keyframes lost); only a second appender was refused."""
    m = tmp_path / "m"
    log, kfs = _log(m, n=3)  # the node's live map, open for appending
    before = snapshot(m)
    other = synthetic_keyframes(2, seed=7)
    with pytest.raises(MapStoreError, match=IN_USE):  # map compact/merge/label --out, replay --map-save
        save_keyframes(m, other, MODEL, DIM, index_writer=index_writer(other))
    with pytest.raises(MapStoreError, match=IN_USE):  # replay's and the tools' early check
        check_save_target(m)
    source, _ = _log(tmp_path / "other_node", n=1)
    with pytest.raises(MapStoreError, match=IN_USE):  # another node's ~/save_map (a snapshot of its live map)
        live_map_dirs.snapshot(source, m)
    with pytest.raises(MapStoreError, match=IN_USE):  # a second node appending
        live_map.MapLog(m, FP, writable=True)
    assert snapshot(m) == before
    log.append(synthetic_keyframes(4, seed=0)[3])  # the owner goes on
    log.close()
    assert len(live_map.MapLog(m, FP)) == 4
    save_keyframes(m, other, MODEL, DIM, index_writer=index_writer(other))  # no writer: a save may replace it
    assert len(load_keyframes(m, MODEL)[1]) == 2


def test_an_owner_keeps_its_map_across_its_own_saves(tmp_path):
    """A node saving snapshots to map.save_path owns the path from start to shutdown, whichever directory
    the path names after each crash-safe swap."""
    m = tmp_path / "m"
    owner = DirLock.empty(m)  # the map does not exist before the first save
    for n in (2, 3, 4):
        kfs = synthetic_keyframes(n)
        save_keyframes(m, kfs, MODEL, DIM, index_writer=index_writer(kfs), owner=owner)
        assert owner.holds(m)
        with pytest.raises(MapStoreError, match=IN_USE):
            save_keyframes(m, kfs[:1], MODEL, DIM, index_writer=index_writer(kfs[:1]))
    owner.release()
    save_keyframes(m, kfs[:1], MODEL, DIM, index_writer=index_writer(kfs[:1]))


def test_a_snapshot_map_given_as_live_map_path_is_refused_not_emptied(tmp_path):
    kfs = synthetic_keyframes(5)
    m = save_keyframes(tmp_path / "m", kfs, MODEL, DIM, index_writer=index_writer(kfs))
    before = snapshot(m)
    with pytest.raises(MapStoreError, match="snapshot map"):
        live_map_dirs.open_for_append(m, FP, DIM, "float16")
    det = _detector()
    with pytest.raises(MapStoreError, match="snapshot map"):
        det.attach_store(m)
    assert snapshot(m) == before
    assert len(load_keyframes(m, MODEL)[1]) == 5


def test_a_keyframe_the_map_cannot_hold_never_blocks_the_own_ones(tmp_path):
    """Before: one peer keyframe id >= 2^63 failed its append; now it is refused (kept in memory only)
    and every own keyframe behind it still reaches the disk."""
    det = _detector()
    det.attach_store(tmp_path / "live")
    rogue = synthetic_keyframes(1, seed=3, robot="rogue")[0]
    rogue.id = 2**63
    assert det.add_remote_keyframes([rogue]) == 1
    assert det.store_refused == 1 and det.store_pending == 0
    for kf in synthetic_keyframes(3, seed=4):
        det.process_descriptors(kf.stamp_ns, kf.global_, kf.local)
    det.detach_store()
    back = live_map.MapLog(tmp_path / "live", FP)
    assert len(back) == 3 and all(k.robot_id != "rogue" for k in back.keyframes)
    assert det.num_keyframes == 4  # the rogue keyframe is still searchable in memory
