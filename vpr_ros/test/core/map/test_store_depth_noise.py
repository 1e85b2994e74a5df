"""The keyframes' depth noise (``KeyframeGeometry.depth_sigma_coeff``, issue 21) in the map store and on the
fleet wire: exact round trip, maps and peers from before it load as unknown (NaN -> the configured RGB-D
default), bad values are refused or named as damage."""

from __future__ import annotations

import dataclasses
import sqlite3

import numpy as np
import pytest

from store_maps import DIM, MODEL, index_writer, sql, synthetic_keyframes
from test_map_log import _detector
from test_store_geometry import _geometry
from vpr_ros.core.config import GeometryConfig
from vpr_ros.core.errors import MapStoreError
from vpr_ros.core.fleet.remote_keyframes import decode_geometry, encode_geometry
from vpr_ros.core.geometry.keyframe_geometry import depth_sigma_of
from vpr_ros.core.map.integrity import write_manifest
from vpr_ros.core.map.snapshot import load_keyframes, save_keyframes

COEFFS = [0.0079, 0.0, float("nan")]  # stereo (EuRoC), exact (rendered), unknown


def _keyframes(n: int = 4):
    rng = np.random.default_rng(4)
    kfs = synthetic_keyframes(n)
    for i, kf in enumerate(kfs[:3]):  # the last one has no camera
        kf.geometry = dataclasses.replace(_geometry(rng, 20, "sift"), depth_sigma_coeff=COEFFS[i])
    return kfs


def _coeffs(kfs) -> list[float]:
    return [kf.geometry.depth_sigma_coeff for kf in kfs[:3]]


def test_snapshot_round_trip_and_a_map_saved_before_the_table(tmp_path):
    save_keyframes(tmp_path / "m", _keyframes(), MODEL, DIM, index_writer(_keyframes()))
    _, back = load_keyframes(tmp_path / "m", MODEL)
    np.testing.assert_array_equal(_coeffs(back), COEFFS)  # NaN stays unknown, 0 stays exact
    # What vpr_ros before issue 21 wrote: geometry without the noise table.
    sql(tmp_path / "m", "DROP TABLE geometry_noise")
    write_manifest(tmp_path / "m", ["map.sqlite", "index.faiss", "local/00000.npy"])
    _, old = load_keyframes(tmp_path / "m", MODEL)
    assert np.isnan(_coeffs(old)).all()
    # Unknown counts as a real RGB-D sensor's noise (the configured default), not as exact points.
    cfg = GeometryConfig()
    assert [depth_sigma_of(kf.geometry, cfg) for kf in old[:3]] == [cfg.depth_sigma_coeff] * 3 != [0.0] * 3
    assert depth_sigma_of(back[0].geometry, cfg) == pytest.approx(0.0079)


@pytest.mark.parametrize("value, key", [(-0.01, 0), (float("inf"), 0), (0.01, 3)])
def test_a_bad_noise_row_is_named_as_damage(tmp_path, value, key):
    save_keyframes(tmp_path / "m", _keyframes(), MODEL, DIM, index_writer(_keyframes()))
    sql(tmp_path / "m", "INSERT OR REPLACE INTO geometry_noise VALUES (?, ?)", key, value)  # key 3: no geometry
    write_manifest(tmp_path / "m", ["map.sqlite", "index.faiss", "local/00000.npy"])
    with pytest.raises(MapStoreError, match=r"geometry_noise has 1 rows .*damaged"):
        load_keyframes(tmp_path / "m", MODEL)


def test_a_negative_coefficient_is_not_saved(tmp_path):
    kfs = _keyframes()
    kfs[1].geometry.depth_sigma_coeff = -1.0
    with pytest.raises(MapStoreError, match=r"depth_sigma_coeff must be >= 0 or NaN.*nothing was saved"):
        save_keyframes(tmp_path / "m", kfs, MODEL, DIM, index_writer(kfs))


def test_live_map_round_trip_and_a_live_map_from_before_the_table(tmp_path):
    kfs = _keyframes()
    det = _detector()
    det.attach_store(tmp_path / "live")
    for kf in kfs[:2]:
        det.process_descriptors(kf.stamp_ns, kf.global_, kf.local, kf.pose, geometry=kf.geometry)
    det.detach_store()
    # A live map written before the table: its keyframes are unknown; appending creates the table.
    db = sqlite3.connect(tmp_path / "live" / "log.sqlite")
    with db:
        db.execute("DROP TABLE geometry_noise")
    db.close()
    again = _detector()
    assert again.attach_store(tmp_path / "live") == 2
    assert np.isnan(again.keyframe_with_local(0).geometry.depth_sigma_coeff)
    for kf in kfs[2:]:
        again.process_descriptors(kf.stamp_ns, kf.global_, kf.local, kf.pose, geometry=kf.geometry)
    again.detach_store()
    third = _detector()
    assert third.attach_store(tmp_path / "live") == 4
    assert np.isnan(third.keyframe_with_local(2).geometry.depth_sigma_coeff)  # NaN: no row written
    third.detach_store()
    fresh = _detector()
    fresh.attach_store(tmp_path / "fresh")
    for kf in kfs:
        fresh.process_descriptors(kf.stamp_ns, kf.global_, kf.local, kf.pose, geometry=kf.geometry)
    np.testing.assert_array_equal([fresh.keyframe_with_local(k).geometry.depth_sigma_coeff for k in range(3)], COEFFS)
    fresh.detach_store()


def test_fleet_wire_carries_the_coefficient_and_older_senders_read_as_unknown():
    kfs = _keyframes()
    for kf, want in zip(kfs[:3], COEFFS):
        fields = encode_geometry(kf.geometry)
        assert fields["depth_sigma_coeff"] == (want if want == want else -1.0)  # unknown: -1, the msg default
        got = decode_geometry(fields).depth_sigma_coeff
        assert got == want or (np.isnan(got) and np.isnan(want))
    older = {k: v for k, v in encode_geometry(kfs[0].geometry).items() if k != "depth_sigma_coeff"}
    assert np.isnan(decode_geometry(older).depth_sigma_coeff)
