"""With a live map, keyframe geometry (keypoints, descriptors, 3-D points: 150-500 kB each with SIFT)
lives on disk like the local features and is read back only when a loop needs a relative pose."""

from __future__ import annotations

import numpy as np

from store_maps import MODEL, synthetic_keyframes
from test_map_log import _detector
from test_store_geometry import _assert_same, _geometry
from vpr_ros.core.map.snapshot import load_keyframes


def _with_geometry(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    kfs = synthetic_keyframes(n, seed=seed)
    for i, kf in enumerate(kfs):
        kf.geometry = _geometry(rng, 300, "sift") if i % 3 else None  # every third has no camera
    return kfs


def test_live_map_keeps_geometry_on_disk_and_reads_it_back(tmp_path):
    kfs = _with_geometry(6)
    det = _detector()
    det.attach_store(tmp_path / "live")
    for kf in kfs:
        det.process_descriptors(kf.stamp_ns, kf.global_, kf.local, kf.pose, geometry=kf.geometry)
    assert all(kf.geometry is None and kf.local is None for kf in det.keyframes)  # nothing heavy in RAM
    assert all(kf.geometry is None for kf in det.store.keyframes)
    for key, kf in enumerate(kfs):
        got = det.keyframe_with_local(key)
        assert (got.geometry is None) == (kf.geometry is None)
        if kf.geometry is not None:
            _assert_same(got.geometry, kf.geometry)
        np.testing.assert_array_equal(got.local, kf.local)
    # Reopened by another detector (node restart): still on disk, still read back.
    det.detach_store()
    assert det.keyframes[1].geometry is not None  # detaching brings them back into RAM
    again = _detector()
    assert again.attach_store(tmp_path / "live") == 6
    assert all(kf.geometry is None for kf in again.keyframes)
    _assert_same(again.keyframe_with_local(4).geometry, kfs[4].geometry)
    assert again.keyframe_with_local(3).geometry is None
    # A snapshot of the live map and the map tools' reader carry the geometry whole.
    again.save_map(tmp_path / "snap")
    for path in ("live", "snap"):
        _, back = load_keyframes(tmp_path / path, MODEL)
        _assert_same(back[5].geometry, kfs[5].geometry)
    again.detach_store()


def test_a_loaded_live_map_reads_geometry_on_demand(tmp_path):
    kfs = _with_geometry(4, seed=3)
    writer = _detector()
    writer.attach_store(tmp_path / "live")
    for kf in kfs:
        writer.process_descriptors(kf.stamp_ns, kf.global_, kf.local, kf.pose, geometry=kf.geometry)
    writer.detach_store()
    reader = _detector()
    assert reader.load_map(tmp_path / "live") == 4
    assert all(kf.geometry is None for kf in reader.keyframes)
    _assert_same(reader.keyframe_with_local(2).geometry, kfs[2].geometry)
    reader.save_map(tmp_path / "snap")  # an in-memory detector's snapshot still holds every geometry
    _, back = load_keyframes(tmp_path / "snap", MODEL)
    _assert_same(back[1].geometry, kfs[1].geometry)
