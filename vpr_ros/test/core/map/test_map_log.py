"""The live (incremental) map: appends, encodings, torn tails, damage named, model refusals, detector use."""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import corridor_image
from store_maps import DIM, LOCAL, MODEL, snapshot, synthetic_keyframes
from vpr_ros.core.map import live_map, live_map_dirs
from vpr_ros.core.config import config_from_flat
from vpr_ros.core.detector import LoopClosureDetector
from vpr_ros.core.errors import ConfigError, MapStoreError
from vpr_ros.core.map.local_segments import HEADER, decode, encode, payload_size
from vpr_ros.core.map.snapshot import classify_dir, load_keyframes, save_keyframes
from vpr_ros.core.types import Frame
from vpr_ros.core.matching.verification import mnn_count

NS = 10**9
FP = {"model_id": MODEL, "weights_digest": "test", "preprocessing": None}


def _log(path, encoding="float16", n=0, seed=0):
    log = live_map_dirs.open_for_append(path, FP, DIM, encoding)
    kfs = synthetic_keyframes(n, seed=seed)
    for kf in kfs:
        log.append(kf)
    return log, kfs


@pytest.mark.parametrize("encoding", ["float32", "float16", "int8"])
def test_encodings_round_trip_within_their_precision(encoding, rng):
    x = rng.standard_normal((7, 5, 64)).astype(np.float32)
    x /= np.linalg.norm(x, axis=2, keepdims=True)
    x[0, 0] = 0  # an all-zero location must not become NaN
    payload = encode(x, encoding)
    assert len(payload) == payload_size(x.shape, encoding)
    y = decode(payload, x.shape, encoding)
    assert y.dtype == np.float32 and np.isfinite(y).all() and not y[0, 0].any()
    err = np.abs(y - x).max()
    if encoding == "float32":
        assert err == 0
    elif encoding == "float16":
        assert err < 1e-3
    else:  # half a quantisation step of each location's own scale
        assert np.all(np.abs(y - x) <= np.abs(x).max(axis=2, keepdims=True) / 254 + 1e-7)


def test_appended_keyframes_reopen_with_their_fields(tmp_path):
    log, kfs = _log(tmp_path / "m", "float32", 6)
    log.close()
    assert classify_dir(tmp_path / "m") == "complete"
    back = live_map.MapLog(tmp_path / "m", FP)
    assert len(back) == 6
    for i, kf in enumerate(kfs):
        got = back.keyframes[i]
        assert (got.id, got.stamp_ns, got.robot_id, got.session_id) == (kf.id, kf.stamp_ns, kf.robot_id, kf.session_id)
        assert np.array_equal(got.global_, kf.global_) and np.array_equal(got.pose, kf.pose)
        assert got.local is None  # on disk, read on demand
        assert np.array_equal(back.read_local(i), kf.local)


def test_torn_tail_record_is_ignored_then_truncated_by_the_next_writer(tmp_path):
    log, kfs = _log(tmp_path / "m", "float16", 3)
    log.close()
    seg = tmp_path / "m" / "local" / "00000.seg"
    good = seg.stat().st_size
    with open(seg, "ab") as f:  # a writer killed in the middle of the 4th record (no row committed)
        f.write(b"VPRL" + os.urandom(HEADER + 10))
    assert len(live_map.MapLog(tmp_path / "m", FP)) == 3
    w = live_map.MapLog(tmp_path / "m", FP, writable=True)
    assert seg.stat().st_size == good
    extra = synthetic_keyframes(4, seed=9)[3]
    assert w.append(extra) == 3
    w.close()
    back = live_map.MapLog(tmp_path / "m", FP)
    assert len(back) == 4 and np.allclose(back.read_local(3), extra.local, atol=1e-2)


@pytest.mark.parametrize("damage", ["cut_tail", "empty_segment", "missing_segment", "local_is_a_file"])
def test_row_without_its_record_is_damage_and_no_row_is_ever_deleted(tmp_path, damage):
    log, _ = _log(tmp_path / "m", "float16", 4)
    log.close()
    root = tmp_path / "m"
    seg = root / "local" / "00000.seg"
    rec = HEADER + payload_size(LOCAL, "float16")
    if damage == "cut_tail":
        os.truncate(seg, 3 * rec + 5)  # records are fdatasynced before their rows: no power loss does this
    elif damage == "empty_segment":
        os.truncate(seg, 0)
    elif damage == "missing_segment":
        seg.unlink()
    else:
        shutil.rmtree(root / "local")
        (root / "local").write_bytes(b"not a directory")
    before = snapshot(root)
    with pytest.raises(MapStoreError, match="damaged"):
        live_map.MapLog(root, FP)  # a reader (map verify, --map-load)
    with pytest.raises(MapStoreError, match="damaged"):
        live_map_dirs.open_for_append(root, FP, DIM, "float16")  # a node continuing the map
    assert snapshot(root) == before  # nothing changed, every row is still there
    db = sqlite3.connect(root / "log.sqlite")
    assert db.execute("SELECT count(*) FROM keyframes").fetchone()[0] == 4


def test_garbage_wal_is_damage_not_a_silent_rollback(tmp_path):
    log, _ = _log(tmp_path / "m", "float16", 2)
    log.close()
    root = tmp_path / "m"
    (root / "log.sqlite-wal").write_bytes(os.urandom(4096))
    before = snapshot(root)
    with pytest.raises(MapStoreError, match="not a SQLite write-ahead log"):
        live_map.MapLog(root, FP)
    with pytest.raises(MapStoreError, match="not a SQLite write-ahead log"):
        live_map_dirs.open_for_append(root, FP, DIM, "float16")
    assert snapshot(root) == before


def test_a_killed_writers_wal_is_not_damage(tmp_path):
    """A WAL a killed writer left (valid header, committed frames) opens, with every keyframe."""
    import subprocess
    import sys
    code = ("import sys, os; sys.path[:0] = sys.argv[2:]\n"
            "from test_map_log import _log\n"
            "from pathlib import Path\n"
            "log, _ = _log(Path(sys.argv[1]), 'float16', 3)\n"
            "os.kill(os.getpid(), 9)\n")
    here = str(Path(__file__).parent)
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "m"), here, *sys.path], check=False)
    assert (tmp_path / "m" / "log.sqlite-wal").stat().st_size > 0
    assert len(live_map.MapLog(tmp_path / "m", FP)) == 3


def test_readers_create_no_file_in_the_map(tmp_path):
    log, _ = _log(tmp_path / "m", "float16", 2)
    log.close()
    root = tmp_path / "m"
    for name in ("log.sqlite-wal", "log.sqlite-shm"):
        if (root / name).exists():
            (root / name).unlink()  # a cleanly closed map: everything is in log.sqlite
    before = snapshot(root)
    back = live_map.MapLog(root, FP)
    back.read_local(1)
    back.close()
    assert snapshot(root) == before


def test_a_symlinked_segment_is_never_written_through(tmp_path):
    log, _ = _log(tmp_path / "m", "float16", 2)
    log.close()
    root = tmp_path / "m"
    user = tmp_path / "precious.txt"
    user.write_bytes(b"user data")
    seg = root / "local" / "00000.seg"
    user_copy = seg.read_bytes()
    seg.unlink()
    (root / "local" / "00000.seg").symlink_to(user)
    with pytest.raises(MapStoreError, match="symbolic link"):
        live_map_dirs.open_for_append(root, FP, DIM, "float16")
    assert user.read_bytes() == b"user data"
    assert len(user_copy) > 0


def test_damaged_record_is_named_never_returned(tmp_path):
    log, _ = _log(tmp_path / "m", "float16", 3)
    log.close()
    seg = tmp_path / "m" / "local" / "00000.seg"
    rec = HEADER + payload_size(LOCAL, "float16")
    with open(seg, "r+b") as f:
        f.seek(rec + HEADER + 7)
        byte = f.read(1)
        f.seek(rec + HEADER + 7)
        f.write(bytes([byte[0] ^ 0xFF]))
    back = live_map.MapLog(tmp_path / "m", FP)
    back.read_local(0)
    with pytest.raises(MapStoreError, match=r"local/00000\.seg is damaged .*key 1"):
        back.read_local(1)
    # A record missing in the middle is damage, not a tail.
    with open(seg, "r+b") as f:
        f.seek(rec)
        f.write(b"XXXX")
    with pytest.raises(MapStoreError, match=r"00000\.seg lacks the record of keyframe key 1"):
        live_map.MapLog(tmp_path / "m", FP)


@pytest.mark.parametrize("field,value", [("model_id", "other@x"), ("weights_digest", "beef"),
                                         ("preprocessing", {"recipe": "pil-bilinear"})])
def test_other_model_weights_or_preprocessing_is_refused(tmp_path, field, value):
    _log(tmp_path / "m", n=2)[0].close()
    with pytest.raises(MapStoreError, match="cannot be compared"):
        live_map.MapLog(tmp_path / "m", {**FP, field: value})
    with pytest.raises(MapStoreError, match="cannot be compared"):
        live_map_dirs.open_for_append(tmp_path / "m", {**FP, field: value}, DIM, "float16")
    assert len(live_map.MapLog(tmp_path / "m", FP)) == 2  # untouched


def test_foreign_directory_is_refused_and_untouched(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "notes.txt").write_text("mine")
    with pytest.raises(MapStoreError):
        live_map_dirs.open_for_append(tmp_path / "d", FP, DIM, "float16")
    assert os.listdir(tmp_path / "d") == ["notes.txt"]


def test_segments_roll_over_and_snapshot_copies_committed_records(tmp_path):
    rec = HEADER + payload_size(LOCAL, "float32")
    log = live_map_dirs.open_for_append(tmp_path / "m", FP, DIM, "float32", segment_bytes=2 * rec)
    kfs = synthetic_keyframes(5)
    for kf in kfs:
        log.append(kf)
    assert sorted(os.listdir(tmp_path / "m" / "local")) == ["00000.seg", "00001.seg", "00002.seg"]
    live_map_dirs.snapshot(log, tmp_path / "copy")
    log.close()
    back = live_map.MapLog(tmp_path / "copy", FP)
    assert [np.array_equal(back.read_local(i), kf.local) for i, kf in enumerate(kfs)] == [True] * 5


def test_encoding_config_is_checked():
    with pytest.raises(ConfigError, match="float32, float16, int8"):
        config_from_flat({"map.local_encoding": "bf16"})


class _Fixed:
    model_id = MODEL
    global_dim = DIM


def _detector(encoding="float32", **kw):
    return LoopClosureDetector(config_from_flat({"map.local_encoding": encoding, **kw}), _Fixed())


def test_detector_appends_each_keyframe_and_keeps_no_local_in_ram(tmp_path):
    det = _detector()
    det.attach_store(tmp_path / "live")
    kfs = synthetic_keyframes(5)
    for kf in kfs:
        det.process_descriptors(kf.stamp_ns, kf.global_, kf.local, kf.pose)
        # On disk before process_descriptors returns.
        assert len(live_map.MapLog(tmp_path / "live", FP)) == det.num_keyframes
    assert all(kf.local is None for kf in det.keyframes)
    assert np.array_equal(det.local_features(2), kfs[2].local)
    det.detach_store()
    assert np.array_equal(det.keyframes[2].local, kfs[2].local)  # detaching brings them back into RAM


def test_attach_continues_a_live_map_and_appends_loaded_snapshot_keyframes(tmp_path):
    snap = synthetic_keyframes(3, seed=4, session="old")
    from store_maps import index_writer
    save_keyframes(tmp_path / "snap", snap, MODEL, DIM, index_writer(snap))
    det = _detector()
    det.load_map(tmp_path / "snap")
    assert det.attach_store(tmp_path / "live") == 0
    det.process_descriptors(100 * NS, np.eye(DIM, dtype=np.float32)[0], np.ones(LOCAL, np.float32))
    det.detach_store()
    det2 = _detector()
    assert det2.attach_store(tmp_path / "live") == 4  # continued: 3 loaded + 1 own
    assert np.array_equal(det2.local_features(1), snap[1].local)
    step = det2.process_descriptors(200 * NS, np.eye(DIM, dtype=np.float32)[1], np.ones(LOCAL, np.float32))
    assert step.keyframe.id == 1  # own session numbering continues


def test_failed_load_of_a_live_map_changes_nothing(tmp_path):
    log = live_map_dirs.open_for_append(tmp_path / "m", {**FP, "weights_digest": "0ther"}, DIM, "float16")
    for kf in synthetic_keyframes(3):
        log.append(kf)
    log.close()
    det = _detector()
    det.process_descriptors(0, np.eye(DIM, dtype=np.float32)[0], np.ones(LOCAL, np.float32))
    before = sorted(os.listdir(tmp_path / "m")), (tmp_path / "m" / "log.sqlite").read_bytes()
    with pytest.raises(MapStoreError, match="cannot be compared"):
        det.load_map(tmp_path / "m")
    assert det.num_keyframes == 1 and len(det._index) == 1
    assert (sorted(os.listdir(tmp_path / "m")), (tmp_path / "m" / "log.sqlite").read_bytes()) == before


def _corridor_loops(det):
    out, t = [], 0
    for split in ("ref", "query"):
        for i in range(0, 40):
            res = det.process(Frame(t, corridor_image(split, i)))
            out.append(sorted((v.candidate.keyframe_id, v.local_matches, v.accepted) for v in res.verifications))
            t += NS // 2
        t += 100 * NS
    return out


def test_decisions_with_a_live_map_equal_in_memory(tmp_path, tiny_extractor):
    kw = {"detector.min_loop_gap_sec": 30.0, "verify.min_matches": 30, "verify.temporal_consistency": 2}
    ref = _corridor_loops(LoopClosureDetector(config_from_flat(kw), tiny_extractor))
    det = LoopClosureDetector(config_from_flat({**kw, "map.local_encoding": "float32"}), tiny_extractor)
    det.attach_store(tmp_path / "live")
    got = _corridor_loops(det)
    assert sum(map(len, got)) > 100 and got == ref  # the same candidates, bit-identical MNN counts
    assert all(kf.local is None for kf in det.keyframes)
    # The map reloaded in another detector holds the same keyframes.
    again = LoopClosureDetector(config_from_flat(kw), tiny_extractor)
    assert again.load_map(tmp_path / "live") == det.num_keyframes
    assert dataclasses.astuple(again.keyframes[5])[:4] == dataclasses.astuple(det.keyframes[5])[:4]
    assert np.array_equal(again.local_features(5), det.local_features(5))


@pytest.mark.parametrize("encoding,tolerance", [("float16", 0.003), ("int8", 0.01)])
def test_lossy_encodings_move_mnn_counts_by_under_a_percent(rng, encoding, tolerance):
    # SelaVPR-like 128-d unit features (31x31 grid to stay fast), candidates at three noise levels.
    # (The tiny 6-channel extractor is too tie-prone to say anything: its counts move by 2 of 36.)
    shape = (31, 31, 128)

    def unit(x):
        return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)

    for noise in (0.3, 1.0, 3.0):
        q = unit(rng.standard_normal(shape))
        c = unit(q + noise * rng.standard_normal(shape))
        exact, coded = mnn_count(q, c), mnn_count(q, decode(encode(c, encoding), shape, encoding))
        assert abs(exact - coded) <= max(1, tolerance * exact), (noise, exact, coded)


def test_snapshot_save_and_v1_save_over_a_live_map(tmp_path):
    det = _detector()
    det.attach_store(tmp_path / "live")
    for kf in synthetic_keyframes(3):
        det.process_descriptors(kf.stamp_ns, kf.global_, kf.local, kf.pose)
    assert det.save_map(tmp_path / "live") == 3  # onto itself: nothing to do
    assert det.save_map(tmp_path / "snap") == 3
    assert live_map.is_live_map(tmp_path / "snap")
    det.detach_store()
    plain = _detector()
    plain.load_map(tmp_path / "snap")
    plain.save_map(tmp_path / "snap")  # a v1 snapshot may replace a live map (both are ours)
    assert len(load_keyframes(tmp_path / "snap", MODEL)[1]) == 3


def test_second_writer_is_refused_until_the_first_closes(tmp_path):
    first, _ = _log(tmp_path / "m", n=1)
    with pytest.raises(MapStoreError, match="in use by another writer"):
        live_map.MapLog(tmp_path / "m", FP, writable=True)
    assert len(live_map.MapLog(tmp_path / "m", FP)) == 1  # readers are never blocked
    first.close()
    second = live_map.MapLog(tmp_path / "m", FP, writable=True)
    assert second.append(synthetic_keyframes(2)[1]) == 1
    second.close()
