"""Damaged maps are reported by file name, and a failed load changes nothing (issue 8)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from store_maps import DIM, LOCAL, MODEL, index_writer, make_legacy, snapshot, sql, synthetic_keyframes
from vpr_ros.core.config import Config
from vpr_ros.core.detector import LoopClosureDetector
from vpr_ros.core.errors import MapStoreError
from vpr_ros.core.map.snapshot import load_keyframes, read_meta, save_keyframes

N = 6


class FixedExtractor:
    model_id = MODEL
    global_dim = DIM


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> dict[bool, Path]:
    """One saved map per kind, copied for each test (a save fsyncs, which is slow on a busy disk)."""
    out = {}
    for legacy in (False, True):
        path = tmp_path_factory.mktemp("pristine") / "map"
        kfs = synthetic_keyframes(N)
        save_keyframes(path, kfs, MODEL, DIM, index_writer=index_writer(kfs))
        if legacy:
            make_legacy(path)
        out[legacy] = path
    return out


@pytest.fixture
def make_map(tmp_path, pristine):
    def make(legacy: bool) -> Path:
        return Path(shutil.copytree(pristine[legacy], tmp_path / "map"))
    return make


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def _shard(path: Path, array: np.ndarray) -> None:
    np.save(path / "local" / "00000.npy", array)


def _npy_header(path: Path, header: bytes) -> None:
    (path / "local" / "00000.npy").write_bytes(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header)


_row = (N, 99, "r1", "s1", 0, None, np.ones(DIM, np.float32).tobytes(), 1)

# name -> (damage, file the error must name); every one is found in maps with and without checksums.
DAMAGE = {
    "npy_garbage": (lambda p: (p / "local" / "00000.npy").write_bytes(b"garbage"), "00000.npy"),
    "npy_header_not_a_dict": (lambda p: _npy_header(p, b"{{{ not python\n"), "00000.npy"),
    "npy_header_huge_shape": (lambda p: _npy_header(
        p, b"{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000000, 4), }\n"), "00000.npy"),
    "npy_pickled_object": (lambda p: _shard(p, np.array([{"a": 1}] * N, dtype=object)), "00000.npy"),
    "shard_fewer_rows": (lambda p: _shard(p, np.zeros((N - 1, *LOCAL), np.float32)), "00000.npy"),
    "shard_other_grid": (lambda p: _shard(p, np.zeros((N, 8, 8, 8), np.float32)), "00000.npy"),
    "shard_float64": (lambda p: _shard(p, np.zeros((N, *LOCAL), np.float64)), "00000.npy"),
    "shard_nan": (lambda p: _shard(p, np.full((N, *LOCAL), np.nan, np.float32)), "00000.npy"),
    "shard_missing": (lambda p: (p / "local" / "00000.npy").unlink(), "00000.npy"),
    "extra_shard": (lambda p: _shard(p, np.zeros((N, *LOCAL), np.float32)) or
                    np.save(p / "local" / "00001.npy", np.zeros((1, *LOCAL), np.float32)), "00001.npy"),
    "meta_not_json": (lambda p: sql(p, "UPDATE meta SET value = '{oops' WHERE key = 'global_dim'"), "map.sqlite"),
    "meta_wrong_type": (lambda p: sql(p, "UPDATE meta SET value = '[4, \"x\", 8]' WHERE key = 'local_shape'"),
                        "map.sqlite"),
    "meta_negative_count": (lambda p: sql(p, "UPDATE meta SET value = '-1' WHERE key = 'num_keyframes'"),
                            "map.sqlite"),
    "meta_key_missing": (lambda p: sql(p, "DELETE FROM meta WHERE key = 'local_shape'"), "map.sqlite"),
    "meta_not_utf8": (lambda p: sql(p, "UPDATE meta SET value = CAST(x'22c4ff22' AS TEXT) WHERE key = 'model_id'"),
                      "map.sqlite"),
    "row_text_not_utf8": (lambda p: sql(p, "UPDATE keyframes SET robot_id = CAST(x'c4ff41' AS TEXT) WHERE key = 1"),
                          "map.sqlite"),
    # Found by fuzzing: SQLite's syntax error quotes the damaged schema text, which is not UTF-8.
    "schema_not_utf8": (lambda p: (p / "map.sqlite").write_bytes((p / "map.sqlite").read_bytes().replace(
        b"NOT NULL, session_id", b'NOT NUL\xc4\xec\xcd\xe1\x06\x00\x89\xfb\xd7\x8d"\xb3d')), "map.sqlite"),
    "bad_pose_blob": (lambda p: sql(p, "UPDATE keyframes SET pose = x'0102' WHERE key = 2"), "map.sqlite"),
    "nan_pose": (lambda p: sql(p, "UPDATE keyframes SET pose = ? WHERE key = 2",
                               np.full(16, np.nan).tobytes()), "map.sqlite"),
    "short_descriptor": (lambda p: sql(p, "UPDATE keyframes SET global = x'00' WHERE key = 1"), "map.sqlite"),
    "nan_descriptor": (lambda p: sql(p, "UPDATE keyframes SET global = ? WHERE key = 1",
                                     np.full(DIM, np.nan, np.float32).tobytes()), "map.sqlite"),
    "text_in_integer_column": (lambda p: sql(p, "UPDATE keyframes SET stamp_ns = 'soon' WHERE key = 1"),
                               "map.sqlite"),
    "extra_row": (lambda p: sql(p, "INSERT INTO keyframes VALUES (?, ?, ?, ?, ?, ?, ?, ?)", *_row), "map.sqlite"),
    "deleted_row": (lambda p: sql(p, "DELETE FROM keyframes WHERE key = 3"), "map.sqlite"),
    "deleted_row_and_count": (lambda p: (sql(p, "DELETE FROM keyframes WHERE key = 3"),
                                         sql(p, f"UPDATE meta SET value = '{N - 1}' WHERE key = 'num_keyframes'")),
                              "map.sqlite"),
    "not_a_database": (lambda p: (p / "map.sqlite").write_bytes(np.random.default_rng(0).bytes(8192)),
                       "map.sqlite"),
}


@pytest.mark.parametrize("legacy", [False, True], ids=["checksummed", "legacy"])
@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damage_is_reported_by_file_and_changes_nothing(tmp_path, make_map, damage, legacy):
    path = make_map(legacy)
    apply, filename = DAMAGE[damage]
    apply(path)
    det = LoopClosureDetector(Config(), FixedExtractor())
    det.process_descriptors(0, np.ones(DIM, np.float32), np.ones(LOCAL, np.float32))
    before = snapshot(tmp_path)
    with pytest.raises(MapStoreError, match=filename.replace(".", r"\.")):
        det.load_map(path)
    assert det.num_keyframes == 1 and len(det._index) == 1
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("target,offset", [("map.sqlite", -100), ("map.sqlite", 5000),
                                           ("local/00000.npy", -7), ("index.faiss", -3)])
def test_flipped_bytes_are_found_by_checksum(make_map, target, offset):
    """Flips that parse fine (inside a descriptor, a local feature) are only found by the checksum."""
    path = make_map(legacy=False)
    _flip(path / target, offset)
    with pytest.raises(MapStoreError, match=f"{target.replace('.', '[.]')} is damaged.*checksum"):
        load_keyframes(path, MODEL)


@pytest.mark.parametrize("damage", ["deleted", "garbage"])
def test_manifest_damage_is_reported(make_map, damage):
    path = make_map(legacy=False)
    if damage == "deleted":
        (path / "manifest.json").unlink()
    else:
        (path / "manifest.json").write_text("{not json")
    with pytest.raises(MapStoreError, match="manifest.json"):
        load_keyframes(path, MODEL)


def test_map_without_checksums_loads_with_a_warning(make_map, caplog):
    path = make_map(legacy=True)
    with caplog.at_level(logging.WARNING, logger="vpr_ros.core.map.snapshot"):
        meta, kfs = load_keyframes(path, MODEL)
    assert len(kfs) == N and "damage in its files cannot be detected" in caplog.text
    assert "manifest" not in read_meta(path)
    np.testing.assert_array_equal(kfs[4].global_, synthetic_keyframes(N)[4].global_)


def test_roundtrip_keeps_every_field(tmp_path):
    kfs = synthetic_keyframes(N)
    kfs[2].local = None
    kfs[3].pose = None
    path = tmp_path / "m"
    save_keyframes(path, kfs, MODEL, DIM, index_writer=index_writer(kfs))
    meta, back = load_keyframes(path, MODEL)
    assert meta["num_keyframes"] == N and meta["local_shape"] == list(LOCAL) and meta["manifest"] is True
    for a, b in zip(kfs, back):
        assert (a.id, a.stamp_ns, a.robot_id, a.session_id) == (b.id, b.stamp_ns, b.robot_id, b.session_id)
        np.testing.assert_array_equal(a.global_, b.global_)
        assert (a.local is None) == (b.local is None) and (a.pose is None) == (b.pose is None)
    np.testing.assert_array_equal(back[5].local, kfs[5].local)
    np.testing.assert_array_equal(back[5].pose, kfs[5].pose)
    assert load_keyframes(path, MODEL, load_local=False)[1][5].local is None


@pytest.mark.parametrize("target", ["map.sqlite", "local/00000.npy"])
def test_random_corruption_of_a_map_without_checksums_raises_only_map_store_error(make_map, target):
    """Fuzz: without a manifest the parsers see the damage; they may load or refuse, never crash."""
    path = make_map(legacy=True)
    pristine = (path / target).read_bytes()
    rng = np.random.default_rng(5)
    outcomes = {"loaded": 0, "refused": 0}
    for _ in range(40):
        data = bytearray(pristine)
        start = int(rng.integers(0, len(data)))
        length = int(rng.integers(1, 512))
        data[start:start + length] = rng.bytes(len(data[start:start + length]))
        if rng.random() < 0.2:
            data = data[:int(rng.integers(0, len(data)))]  # truncated too
        (path / target).write_bytes(bytes(data))
        try:
            load_keyframes(path, MODEL)
            outcomes["loaded"] += 1
        except MapStoreError as exc:
            assert target.split("/")[-1] in str(exc)
            outcomes["refused"] += 1
    assert outcomes["refused"] > 0


@pytest.mark.parametrize("where", ["/", "", "nowhere", "a_file", "a\x00b"])
def test_paths_that_are_no_map_are_reported(tmp_path, monkeypatch, where):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(MapStoreError, match="not a vpr_ros map"):
        load_keyframes(where, MODEL)
