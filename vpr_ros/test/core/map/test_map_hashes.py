"""Keyframes' binary hashes in maps (core/map/hash_table.py): snapshot and live map round trips, maps
without hashes unchanged, damage named by ``vpr-ros map verify``, the detector reloading a hash-first map."""

from __future__ import annotations

import dataclasses
import sqlite3

import numpy as np
import pytest

from store_maps import DIM, MODEL, index_writer, sql, synthetic_keyframes
from vpr_ros.cli.map_verify import verify_map
from vpr_ros.core.config import config_from_flat
from vpr_ros.core.detector import LoopClosureDetector
from vpr_ros.core.errors import MapStoreError
from vpr_ros.core.map import live_map, live_map_dirs
from vpr_ros.core.map.snapshot import load_keyframes, save_keyframes
from vpr_ros.core.types import Frame

from hash_extractor import HashingTinyExtractor
from revisit_data import corridor_revisit

FP = {"model_id": MODEL, "weights_digest": "test", "preprocessing": None}


def _hashed(n, seed=0):
    rng = np.random.default_rng(seed)
    return [dataclasses.replace(kf, hash=rng.integers(0, 256, 64, dtype=np.uint8) if i != 2 else None)
            for i, kf in enumerate(synthetic_keyframes(n, seed))]


def test_snapshot_keeps_hashes_and_verify_counts_and_checks_them(tmp_path):
    kfs = _hashed(5)
    save_keyframes(tmp_path / "m", kfs, MODEL, DIM, index_writer(kfs))
    _, back = load_keyframes(tmp_path / "m", MODEL)
    assert [None if k.hash is None else k.hash.tolist() for k in back] == \
        [None if k.hash is None else k.hash.tolist() for k in kfs]
    assert back[0].hash.dtype == np.uint8
    verdict = verify_map(tmp_path / "m")
    assert verdict.ok and "4 hashes (64 B each)" in verdict.message
    # A map of a model without hashes has no table and loads as before.
    plain = synthetic_keyframes(3)
    save_keyframes(tmp_path / "p", plain, MODEL, DIM, index_writer(plain))
    assert all(k.hash is None for k in load_keyframes(tmp_path / "p", MODEL)[1])
    assert "no hashes" in verify_map(tmp_path / "p").message
    with pytest.raises(MapStoreError, match="hashes of \\[32, 64\\] bytes"):
        mixed = [kfs[0], dataclasses.replace(kfs[1], hash=np.zeros(32, np.uint8))]
        save_keyframes(tmp_path / "x", mixed, MODEL, DIM, index_writer(mixed))
    assert not (tmp_path / "x").exists()


def test_live_map_keeps_hashes_across_reopen_and_names_a_damaged_row(tmp_path):
    log = live_map_dirs.open_for_append(tmp_path / "m", FP, DIM, "float16")
    kfs = _hashed(4, seed=1)
    for kf in kfs:
        log.append(kf)
    assert np.array_equal(log.keyframes[1].hash, kfs[1].hash)
    log.close()
    back = live_map.MapLog(tmp_path / "m", FP)
    assert [None if k.hash is None else k.hash.tolist() for k in back.keyframes] == \
        [None if k.hash is None else k.hash.tolist() for k in kfs]
    back.close()
    assert verify_map(tmp_path / "m").ok
    db = sqlite3.connect(tmp_path / "m" / "log.sqlite")
    with db:
        db.execute("UPDATE hashes SET code = ? WHERE key = 1", (b"\x00" * 8,))
    db.close()
    verdict = verify_map(tmp_path / "m")
    assert not verdict.ok and "table hashes" in verdict.message and str(tmp_path / "m") in verdict.message


def test_snapshot_row_naming_no_keyframe_is_damage(tmp_path):
    kfs = _hashed(3)
    save_keyframes(tmp_path / "m", kfs, MODEL, DIM, index_writer(kfs))
    (tmp_path / "m" / "manifest.json").unlink()  # legacy map: only the structure is checked
    sql(tmp_path / "m", "DELETE FROM meta WHERE key = 'manifest'")
    sql(tmp_path / "m", "INSERT INTO hashes VALUES (7, ?)", b"\x01" * 64)
    with pytest.raises(MapStoreError, match="table hashes has 1 rows naming no keyframe"):
        load_keyframes(tmp_path / "m", MODEL)


def test_hash_first_detector_reloads_its_map_and_refuses_a_map_without_hashes(tmp_path):
    config = config_from_flat({"index.first_pass": "hash", "verify.min_matches": 60})
    detector = LoopClosureDetector(config, HashingTinyExtractor())
    frames = corridor_revisit(5)
    for stamp, image in frames[:5]:
        detector.process(Frame(stamp, image))
    detector.save_map(tmp_path / "snap")
    detector.attach_store(tmp_path / "live")
    detector.detach_store()
    want = [v.candidate.keyframe_id for v in detector.process(Frame(*frames[6])).verifications]
    assert want
    for path in ("snap", "live"):
        again = LoopClosureDetector(config, HashingTinyExtractor())
        assert again.load_map(tmp_path / path) == 5
        assert all(kf.hash is not None for kf in again.keyframes)
        assert [v.candidate.keyframe_id for v in again.process(Frame(*frames[6])).verifications] == want
    sql(tmp_path / "snap", "DROP TABLE hashes")  # as a map saved before hashes were stored
    (tmp_path / "snap" / "manifest.json").unlink()
    sql(tmp_path / "snap", "DELETE FROM meta WHERE key = 'manifest'")
    with pytest.raises(MapStoreError, match="index.first_pass=hash needs one for every keyframe"):
        LoopClosureDetector(config, HashingTinyExtractor()).load_map(tmp_path / "snap")
