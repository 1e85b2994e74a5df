"""Loading the same map (or keyframes already present) twice skips them instead of doubling the map."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from store_maps import DIM, LOCAL, MODEL, index_writer, synthetic_keyframes
from vpr_ros.cli.session import FRAME_INDEX_FILE, load_frame_index, save_frame_index
from vpr_ros.core.config import config_from_flat
from vpr_ros.core.detector import LoopClosureDetector
from vpr_ros.core.errors import MapStoreError
from vpr_ros.core.eval.groundtruth import KeyframeRecord
from vpr_ros.core.map.snapshot import load_keyframes, save_keyframes

NS = 10**9


class FixedExtractor:
    model_id = MODEL
    global_dim = DIM


def _detector(session: str = "live") -> LoopClosureDetector:
    cfg = config_from_flat({"detector.session_id": session, "detector.robot_id": "r1"})
    return LoopClosureDetector(cfg, FixedExtractor())


def test_loading_a_map_twice_skips_what_is_present(tmp_path, caplog):
    kfs = synthetic_keyframes(5)
    save_keyframes(tmp_path / "m", kfs, MODEL, DIM, index_writer(kfs))
    det = _detector()
    assert det.load_map(tmp_path / "m") == 5
    with caplog.at_level(logging.WARNING, logger="vpr_ros.core.detector"):
        assert det.load_map(tmp_path / "m") == 0
    assert "skipped 5 of 5" in caplog.text
    assert det.num_keyframes == 5 and len(det._index) == 5
    # A search finds each map keyframe once, not twice.
    keys, _ = det._index.search(kfs[2].global_, 3)
    assert len({det.keyframe(int(k)).id for k in keys}) == len(keys)
    # A bigger save of the same session adds only its new keyframes.
    more = synthetic_keyframes(8)
    save_keyframes(tmp_path / "m2", more, MODEL, DIM, index_writer(more))
    assert det.load_map(tmp_path / "m2") == 3
    assert [kf.id for kf in det.keyframes] == list(range(8))


def test_reloading_own_session_continues_numbering_without_duplicates(tmp_path):
    det = _detector("s1")
    for i in range(4):
        det.process_descriptors(i * NS, np.eye(DIM, dtype=np.float32)[i], np.ones(LOCAL, np.float32))
    det.save_map(tmp_path / "own")
    assert det.load_map(tmp_path / "own") == 0
    assert det.num_keyframes == 4
    step = det.process_descriptors(10 * NS, np.eye(DIM, dtype=np.float32)[9], np.ones(LOCAL, np.float32))
    assert step.keyframe is not None and step.keyframe.id == 4


def test_frame_index_sidecar_survives_replacement_and_is_checked(tmp_path):
    kfs = synthetic_keyframes(3)
    path = tmp_path / "m"
    save_keyframes(path, kfs, MODEL, DIM, index_writer(kfs))
    save_frame_index(path, [KeyframeRecord("r1", "s1", i, i * NS, 10 + i) for i in range(3)])
    assert load_frame_index(path) == {("r1", "s1", i): 10 + i for i in range(3)}
    assert sorted(p.name for p in path.iterdir()) == ["index.faiss", "local", "manifest.json", "map.sqlite",
                                                     FRAME_INDEX_FILE]
    # A map with its sidecar is still ours: saving again replaces both.
    save_keyframes(path, kfs[:2], MODEL, DIM, index_writer(kfs[:2]))
    assert load_frame_index(path) == {} and len(load_keyframes(path, MODEL)[1]) == 2
    (path / FRAME_INDEX_FILE).write_text(json.dumps({"keyframes": 5}))
    with pytest.raises(MapStoreError, match=FRAME_INDEX_FILE):
        load_frame_index(path)
    (path / FRAME_INDEX_FILE).unlink()
    (path / FRAME_INDEX_FILE).mkdir()  # unreadable as a file: an OSError, reported the same way
    with pytest.raises(MapStoreError, match=FRAME_INDEX_FILE):
        load_frame_index(path)
