"""Keyframe geometry in the map store: exact round trip, damage named, and poses of loops against a loaded map."""

from __future__ import annotations

import dataclasses
import sqlite3

import numpy as np
import pytest

from store_maps import DIM, MODEL, index_writer, snapshot, sql, synthetic_keyframes
from vpr_ros.core.errors import MapStoreError
from vpr_ros.core.map.integrity import write_manifest
from vpr_ros.core.map.snapshot import load_keyframes, save_keyframes
from vpr_ros.core.types import KeyframeGeometry


def _geometry(rng: np.random.Generator, n: int, kind: str) -> KeyframeGeometry:
    """A random geometry like keyframe_geometry gives: SIFT (integer float32), ORB (uint8) or any float32."""
    if kind == "sift":
        desc = rng.integers(0, 256, (n, 128)).astype(np.float32)
    elif kind == "orb":
        desc = rng.integers(0, 256, (n, 32), dtype=np.uint8)
    else:  # e.g. RootSIFT: not integers, stored as-is
        desc = rng.standard_normal((n, 64)).astype(np.float32)
    pts = rng.uniform(-5, 5, (n, 3)).astype(np.float32)
    pts[rng.random(n) < 0.3] = np.nan  # keypoints without depth
    T = np.eye(4)
    T[:3, :3] = np.linalg.qr(rng.standard_normal((3, 3)))[0]
    T[:3, 3] = rng.standard_normal(3)
    fisheye = kind == "orb"
    return KeyframeGeometry(
        keypoints=rng.uniform(0, 700, (n, 2)).astype(np.float32), descriptors=desc, points3d=pts,
        image_hw=(480, 752), K=np.array([[458.6, 0, 367.2], [0, 457.3, 248.4], [0, 0, 1]]),
        D=rng.standard_normal(4 if fisheye else 5) * 0.01, distortion_model="equidistant" if fisheye else "plumb_bob",
        T_body_cam=T)


def _assert_same(a: KeyframeGeometry, b: KeyframeGeometry) -> None:
    for f in dataclasses.fields(KeyframeGeometry):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray):
            assert x.dtype == np.asarray(y).dtype and x.shape == np.shape(y), f.name
            np.testing.assert_array_equal(x, y, err_msg=f.name)  # NaN equals NaN here
        else:
            assert x == y, f.name


def _map_with_geometry(path, seed: int = 0):
    rng = np.random.default_rng(seed)
    kfs = synthetic_keyframes(6, seed)
    kinds = {0: "sift", 1: "orb", 2: "float", 4: "sift"}  # 3 and 5 without a camera
    for i, kind in kinds.items():
        kfs[i].geometry = _geometry(rng, 0 if i == 4 else int(rng.integers(1, 300)), kind)
    save_keyframes(path, kfs, MODEL, DIM, index_writer(kfs))
    return kfs


@pytest.mark.parametrize("seed", range(3))
def test_round_trip_gives_identical_arrays(tmp_path, seed):
    kfs = _map_with_geometry(tmp_path / "m", seed)
    meta, loaded = load_keyframes(tmp_path / "m", MODEL)
    assert meta["geometry"] is True
    for kf, back in zip(kfs, loaded):
        if kf.geometry is None:
            assert back.geometry is None
        else:
            _assert_same(kf.geometry, back.geometry)
    # SIFT's integer float32 descriptors are stored as uint8 (lossless, a quarter of the size).
    db = sqlite3.connect(tmp_path / "m" / "map.sqlite")
    enc = dict(db.execute("SELECT key, descriptor_encoding FROM geometry").fetchall())
    db.close()
    assert enc == {0: "float32-as-uint8", 1: "uint8", 2: "float32", 4: "float32-as-uint8"}
    assert load_keyframes(tmp_path / "m", MODEL, load_geometry=False)[1][0].geometry is None


def test_maps_saved_before_geometry_load_without_it(tmp_path):
    # What vpr_ros before issue 9 wrote: no geometry table, no "geometry" meta key.
    kfs = synthetic_keyframes(3)
    save_keyframes(tmp_path / "m", kfs, MODEL, DIM, index_writer(kfs))
    sql(tmp_path / "m", "DROP TABLE geometry")
    sql(tmp_path / "m", "DELETE FROM meta WHERE key = 'geometry'")
    write_manifest(tmp_path / "m", ["map.sqlite", "index.faiss", "local/00000.npy"])
    meta, loaded = load_keyframes(tmp_path / "m", MODEL)
    assert "geometry" not in meta and [k.geometry for k in loaded] == [None] * 3


def test_changed_bytes_are_caught_by_the_checksum(tmp_path):
    _map_with_geometry(tmp_path / "m")
    sql(tmp_path / "m", "UPDATE geometry SET points3d = zeroblob(length(points3d)) WHERE key = 0")
    with pytest.raises(MapStoreError, match=r"map\.sqlite is damaged \(checksum mismatch"):
        load_keyframes(tmp_path / "m", MODEL)


def _set_blob(column: str, value_sql: str):
    return lambda d: sql(d, f"UPDATE geometry SET {column} = {value_sql} WHERE key = 1")


def _nan_in_keypoints(d):
    db = sqlite3.connect(d / "map.sqlite")
    blob = bytearray(db.execute("SELECT keypoints FROM geometry WHERE key = 1").fetchone()[0])
    blob[:4] = np.float32(np.inf).tobytes()
    with db:
        db.execute("UPDATE geometry SET keypoints = ? WHERE key = 1", (bytes(blob),))
    db.close()


@pytest.mark.parametrize("damage, message", [
    (_set_blob("points3d", "substr(points3d, 1, 12)"), "points3d of the wrong size"),
    (_set_blob("descriptors", "x'00'"), "descriptors of the wrong size"),
    (_set_blob("num_points", "num_points + 1"), "keypoints, descriptors, points3d of the wrong size"),
    (_set_blob("descriptor_encoding", "'pickle'"), "descriptor encoding 'pickle'"),
    (_set_blob("K", "zeroblob(72)"), "positive focal lengths"),
    (_set_blob("distortion_model", "'kb8'"), "distortion model 'kb8'"),
    (_set_blob("key", "99"), "names no keyframe"),
    (_nan_in_keypoints, "NaN or inf keypoints"),
    (lambda d: sql(d, "DROP TABLE geometry"), "no such table: geometry"),
])
def test_a_damaged_geometry_row_is_named(tmp_path, damage, message):
    # Damage the checksum cannot see (the manifest rewritten over it): the structural checks name it.
    _map_with_geometry(tmp_path / "m")
    damage(tmp_path / "m")
    write_manifest(tmp_path / "m", ["map.sqlite", "index.faiss", "local/00000.npy"])
    with pytest.raises(MapStoreError) as err:
        load_keyframes(tmp_path / "m", MODEL)
    text = str(err.value)
    assert "map.sqlite" in text and message in text and "re-create it" in text
    if "no such table" not in message:
        assert "geometry row of keyframe key" in text


def test_geometry_that_cannot_be_stored_is_refused_before_writing(tmp_path):
    good = _map_with_geometry(tmp_path / "m")
    before = snapshot(tmp_path / "m")
    bad = synthetic_keyframes(2)
    g = _geometry(np.random.default_rng(1), 10, "sift")
    bad[1].geometry = dataclasses.replace(g, points3d=g.points3d[:9])
    with pytest.raises(MapStoreError, match=r"keyframe 1 has geometry .*points3d must be \(N, 3\).*nothing was saved"):
        save_keyframes(tmp_path / "m", bad, MODEL, DIM, index_writer(bad))
    assert snapshot(tmp_path / "m") == before and len(good) == 6


# -- a reloaded map still gives loops with a measured pose (real images, real default model) --------------

@pytest.fixture(scope="module")
def euroc_model():
    from vpr_ros.cli.bench.geometry import load_euroc
    from vpr_ros.models import load_model
    return load_euroc(), load_model("lite0-gem", backend="torch")


def test_loop_against_a_loaded_map_has_the_same_pose(tmp_path, euroc_model):
    from vpr_ros.core.config import Config, DetectorConfig, VerifyConfig
    from vpr_ros.core.detector import LoopClosureDetector
    from vpr_ros.core.types import Frame

    euroc, model = euroc_model
    im, left, rig = euroc["images"], euroc["left"], euroc["rig"]
    config = Config(verify=VerifyConfig(temporal_consistency=1), detector=DetectorConfig(min_loop_gap_sec=1.0))

    def frame(i: int, stamp_s: int) -> Frame:
        return Frame(stamp_s * 10**9, im[f"left_img_{i}"], camera=left, right=im[f"right_img_{i}"], stereo=rig)

    live = LoopClosureDetector(config, model)
    live.process(frame(0, 0))
    live.save_map(tmp_path / "map")
    expected = live.process(frame(1, 100)).loop_closures[0]
    assert expected.relative_pose_valid

    reloaded = LoopClosureDetector(config, model)
    assert reloaded.load_map(tmp_path / "map") == 1
    loop = reloaded.process(frame(1, 100)).loop_closures[0]
    # Before issue 9 the loaded keyframe had no geometry and this loop had no pose.
    assert loop.relative_pose_valid and loop.translation_scale_known and loop.geometry_method == "pnp"
    np.testing.assert_array_equal(loop.relative_pose, expected.relative_pose)
    np.testing.assert_array_equal(loop.covariance, expected.covariance)
