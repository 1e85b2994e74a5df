"""Saving a map never deletes what is not ours (issue 8, "Data loss")."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from store_maps import MODEL, DIM, index_writer, snapshot, synthetic_keyframes
from vpr_ros.core.errors import MapStoreError
from vpr_ros.core.map.snapshot import check_save_target, load_keyframes, save_keyframes


def _save(path, kfs):
    return save_keyframes(path, kfs, MODEL, DIM, index_writer=index_writer(kfs))


def _foreign_dir(tmp_path: Path) -> Path:
    bag = tmp_path / "bag"
    bag.mkdir()
    (bag / "metadata.yaml").write_text("rosbag2_bagfile_information: {}\n")
    (bag / "bag_0.db3").write_bytes(b"user data")
    return bag


@pytest.mark.parametrize("kind", ["foreign_dir", "file", "symlink_to_foreign", "dangling_symlink",
                                  "dir_with_map_and_user_file"])
def test_refuses_and_leaves_untouched(tmp_path, kind):
    kfs = synthetic_keyframes(3)
    if kind == "foreign_dir":
        target = _foreign_dir(tmp_path)
    elif kind == "file":
        target = tmp_path / "notes.txt"
        target.write_text("my notes")
    elif kind == "symlink_to_foreign":
        target = tmp_path / "link"
        target.symlink_to(_foreign_dir(tmp_path))
    elif kind == "dangling_symlink":
        target = tmp_path / "link"
        target.symlink_to(tmp_path / "nowhere")
    else:  # a map into which the user put a file of their own
        target = tmp_path / "map"
        _save(target, kfs)
        (target / "README.txt").write_text("my notes about this run")
    before = snapshot(tmp_path)
    links = {p: os.readlink(p) for p in tmp_path.iterdir() if p.is_symlink()}
    with pytest.raises(MapStoreError, match="left untouched|not a vpr_ros map"):
        check_save_target(target)  # what a replay asks before its first frame
    with pytest.raises(MapStoreError, match="left untouched|not a vpr_ros map") as err:
        _save(target, synthetic_keyframes(5, seed=1))
    assert str(target) in str(err.value)
    assert "nothing was written" in str(err.value)
    assert snapshot(tmp_path) == before  # no .old, no .tmp-save, nothing removed
    assert {p: os.readlink(p) for p in tmp_path.iterdir() if p.is_symlink()} == links


def test_refuses_current_directory_and_parents(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    for target in (".", "", str(work), str(tmp_path), "./"):
        with pytest.raises(MapStoreError, match="current directory|empty"):
            _save(target, synthetic_keyframes(2))
    assert sorted(os.listdir(tmp_path)) == ["work"] and os.listdir(work) == []


def test_replaces_missing_empty_and_own_map(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    caplog.set_level("DEBUG")
    empty = tmp_path / "empty"
    empty.mkdir()
    a, b = synthetic_keyframes(3), synthetic_keyframes(5, seed=1)
    for target in ("rel/new_map", empty, tmp_path / "odd name?#%20"):
        _save(target, a)
        assert len(load_keyframes(target, MODEL)[1]) == 3
        _save(target, b)  # an existing vpr_ros map is replaced
        _, back = load_keyframes(target, MODEL)
        assert len(back) == 5
        np.testing.assert_array_equal(back[4].global_, b[4].global_)
    # No leftovers next to any of them.
    assert sorted(os.listdir(tmp_path)) == ["empty", "odd name?#%20", "rel"]
    assert os.listdir(tmp_path / "rel") == ["new_map"]
    # Replacing a map is not a crash: nothing may claim an interrupted save was cleaned up.
    assert "interrupted" not in caplog.text


def test_symlink_to_a_map_saves_into_that_map(tmp_path):
    real = tmp_path / "maps" / "run1"
    _save(real, synthetic_keyframes(2))
    link = tmp_path / "current"
    link.symlink_to(real)
    assert _save(link, synthetic_keyframes(4, seed=3)) == real
    assert link.is_symlink() and len(load_keyframes(link, MODEL)[1]) == 4


def test_failed_save_keeps_the_previous_map(tmp_path):
    target = tmp_path / "map"
    _save(target, synthetic_keyframes(3))
    before = snapshot(tmp_path)

    def broken_writer(path):
        raise RuntimeError("faiss: fwrite error")

    with pytest.raises(MapStoreError, match="unchanged"):
        save_keyframes(target, synthetic_keyframes(5, seed=1), MODEL, DIM, index_writer=broken_writer)
    assert snapshot(tmp_path) == before
    bad = synthetic_keyframes(2)
    bad[1].global_ = np.ones(DIM + 1, np.float32)
    with pytest.raises(MapStoreError, match="descriptor of shape"):
        save_keyframes(target, bad, MODEL, DIM)
    assert snapshot(tmp_path) == before


def test_a_keyframe_sqlite_cannot_hold_never_blocks_saving_the_others(tmp_path, caplog):
    """Another robot's keyframe with an id or stamp beyond int64 used to make every save fail (and so lose
    the own keyframes at shutdown): it is left out with a warning, the rest is saved and indexed."""
    kfs = synthetic_keyframes(4)
    kfs[1].robot_id, kfs[1].id = "rogue", 2**63  # from a peer
    kfs[2].stamp_ns = 2**70
    out = save_keyframes(tmp_path / "map", kfs, MODEL, DIM, index_writer=index_writer(kfs))
    meta, back = load_keyframes(out, MODEL)
    assert [k.id for k in back] == [kfs[0].id, kfs[3].id]
    assert "64-bit" in caplog.text
    from vpr_ros.core.index import KeyframeIndex
    assert len(KeyframeIndex.load(out / "index.faiss")) == 2  # the index matches what was kept


def test_check_save_target_accepts_what_a_save_accepts(tmp_path):
    _save(tmp_path / "map", synthetic_keyframes(2))
    (tmp_path / "empty").mkdir()
    for ok in ("map", "empty", "new/deeper/map"):
        assert check_save_target(tmp_path / ok) == tmp_path / ok
    (tmp_path / "file").write_text("x")
    with pytest.raises(MapStoreError, match="not a writable directory"):
        check_save_target(tmp_path / "file" / "map")
    assert sorted(os.listdir(tmp_path)) == ["empty", "file", "map"]  # nothing created


def test_home_is_expanded_as_a_shell_would(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    _save("~/maps/run1", synthetic_keyframes(2))
    assert (tmp_path / "home" / "maps" / "run1" / "map.sqlite").is_file() and not (tmp_path / "~").exists()
    assert len(load_keyframes("~/maps/run1", MODEL)[1]) == 2
