"""Detector on real corridor frames with the tiny extractor, plus map persistence."""

import cv2
import numpy as np
import pytest

from conftest import corridor_image
from vpr_ros.core.config import config_from_flat
from vpr_ros.core.detector import LoopClosureDetector
from vpr_ros.core.errors import ConfigError, InputError, MapStoreError, StampOrderError
from vpr_ros.core.types import Descriptors, Frame
from vpr_ros.models.backends.mnn_screen import configured_screen

NS = 1_000_000_000


def _cfg(**kw):
    base = {"detector.min_loop_gap_sec": 5.0, "verify.min_matches": 30, "verify.temporal_consistency": 2}
    base.update(kw)
    return config_from_flat(base)


def test_revisit_is_detected_and_nothing_inside_exclusion(tiny_extractor):
    # The revisit starts 100 s later; 30 s of exclusion at 2 Hz covers the whole 40-frame
    # revisit, so only the first pass can match.
    det = LoopClosureDetector(_cfg(**{"detector.min_loop_gap_sec": 30.0}), tiny_extractor)
    loops, t = [], 0
    for i in range(0, 40):  # first pass through part of the corridor (ref traversal)
        loops += det.process(Frame(t, corridor_image("ref", i))).loop_closures
        t += NS // 2
    t += 100 * NS
    for i in range(0, 40):  # revisit: the query traversal of the same places
        res = det.process(Frame(t, corridor_image("query", i)))
        loops += res.loop_closures
        t += NS // 2
    assert loops, "the revisit produced no loop closure"
    for loop in loops:
        assert loop.query_stamp_ns - loop.match_stamp_ns >= 5 * NS
        assert loop.consistent_keyframes >= 2
        assert loop.local_matches >= 30 and loop.descriptor_model == "tiny@test"
    # Revisit loops land on ref frames near the same place (ids 0..39 are the ref pass).
    revisits = [lp for lp in loops if lp.query_id >= 40]
    assert revisits and all(lp.match_id < 40 for lp in revisits)
    # The tiny extractor is a weak place recogniser (accuracy is tested with the real model in the
    # demo test); here several loops must still land on the right place.
    near = [abs((lp.query_id - 40) - lp.match_id) <= 4 for lp in revisits]
    assert sum(near) >= 5


def test_keyframe_selection_gates(tiny_extractor):
    det = LoopClosureDetector(_cfg(**{"keyframes.min_gap_sec": 1.0, "keyframes.min_translation_m": 0.5}),
                              tiny_extractor)
    img = corridor_image("ref", 0)
    pose = np.eye(4)
    assert det.process(Frame(0, img, pose)).keyframe is not None
    assert det.process(Frame(NS // 2, img, pose)).skipped_reason == "min_gap"
    assert det.process(Frame(2 * NS, img, pose)).skipped_reason == "travel"
    moved = pose.copy()
    moved[0, 3] = 1.0
    assert det.process(Frame(3 * NS, img, moved)).keyframe is not None
    novelty = LoopClosureDetector(_cfg(**{"keyframes.max_similarity": 0.99}), tiny_extractor)
    novelty.process(Frame(0, img))
    assert novelty.process(Frame(NS, img)).skipped_reason == "novelty"
    assert novelty.process(Frame(2 * NS, corridor_image("ref", 60))).keyframe is not None


def test_bad_inputs_leave_the_map_intact(tiny_extractor):
    det = LoopClosureDetector(_cfg(), tiny_extractor)
    det.process(Frame(5 * NS, corridor_image("ref", 0)))
    with pytest.raises(StampOrderError, match="time went backwards"):
        det.process(Frame(NS, corridor_image("ref", 1)))
    bad_pose = np.eye(4)
    bad_pose[0, 3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        det.process(Frame(6 * NS, corridor_image("ref", 1), bad_pose))
    with pytest.raises(InputError, match="empty"):
        det.process(Frame(7 * NS, np.zeros((0, 0, 3), np.uint8)))
    assert det.num_keyframes == 1
    assert det.process(Frame(8 * NS, corridor_image("ref", 2))).keyframe is not None


def test_map_roundtrip_and_multi_session(tmp_path, tiny_extractor):
    # A fixed dummy pose: switch the travel gate off so every frame stays a keyframe.
    s1 = LoopClosureDetector(_cfg(**{"detector.session_id": "s1", "keyframes.min_translation_m": 0.0,
                                     "keyframes.min_rotation_deg": 0.0}), tiny_extractor)
    for i in range(30):
        s1.process(Frame(i * NS, corridor_image("ref", i), np.eye(4) * 1.0))
    assert s1.save_map(tmp_path / "map") == 30
    s2 = LoopClosureDetector(_cfg(**{"detector.session_id": "s2", "detector.min_loop_gap_sec": 60.0}),
                             tiny_extractor)
    assert s2.load_map(tmp_path / "map") == 30
    kf = s2.keyframe(7)
    assert kf.session_id == "s1" and kf.id == 7 and kf.pose.shape == (4, 4)
    np.testing.assert_array_equal(kf.local, s1.keyframe(7).local)
    loops = []
    for i in range(30):
        loops += s2.process(Frame((100 + i) * NS, corridor_image("query", i))).loop_closures
    assert loops and all(lp.match_session_id == "s1" and lp.query_session_id == "s2" for lp in loops)
    # Reloading our own session continues its keyframe numbering.
    again = LoopClosureDetector(_cfg(**{"detector.session_id": "s1"}), tiny_extractor)
    again.load_map(tmp_path / "map")
    assert again.process(Frame(1000 * NS, corridor_image("ref", 50))).keyframe.id == 30


def test_map_errors_keep_state(tmp_path, tiny_extractor):
    det = LoopClosureDetector(_cfg(), tiny_extractor)
    det.process(Frame(0, corridor_image("ref", 0)))
    det.save_map(tmp_path / "m")
    with pytest.raises(MapStoreError, match="not a vpr_ros map"):
        det.load_map(tmp_path / "nowhere")

    class Other(type(tiny_extractor)):
        model_id = "other@1"

    other = LoopClosureDetector(_cfg(), Other())
    with pytest.raises(MapStoreError, match="built with model 'tiny@test'"):
        other.load_map(tmp_path / "m")
    assert other.num_keyframes == 0
    (tmp_path / "m" / "local" / "00000.npy").write_bytes(b"garbage")
    with pytest.raises(MapStoreError, match="shard"):
        det.load_map(tmp_path / "m")
    assert det.num_keyframes == 1
    # A second save over an existing map replaces it atomically.
    det.process(Frame(NS, corridor_image("ref", 1)))
    assert det.save_map(tmp_path / "m") == 2
    fresh = LoopClosureDetector(_cfg(), tiny_extractor)
    assert fresh.load_map(tmp_path / "m") == 2


def test_store_local_false_needs_global_method(tiny_extractor):
    with pytest.raises(ConfigError, match="map.store_local"):
        LoopClosureDetector(_cfg(**{"map.store_local": False}), tiny_extractor)
    det = LoopClosureDetector(_cfg(**{"map.store_local": False, "verify.method": "global",
                                      "verify.min_global_similarity": 0.5}), tiny_extractor)
    assert det.process(Frame(0, corridor_image("ref", 0))).keyframe.local is None


class _LargeMapTiny:
    """The tiny extractor's features on a 32x32 grid: a 1024 x 1024 similarity matrix (4 MB in
    fp32) is more than one block, so the MNN count runs through the configured screen."""

    model_id = "tiny32@test"
    global_dim = 108

    def __init__(self, tiny):
        self.tiny = tiny

    def extract(self, images):
        out = self.tiny.extract(images)
        loc = []
        for im in images:
            grey = cv2.cvtColor(im, cv2.COLOR_RGB2GRAY).astype(np.float32)
            small = cv2.resize(im, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
            gx = cv2.Sobel(cv2.resize(grey, (32, 32)), cv2.CV_32F, 1, 0)[..., None]
            f = np.concatenate([small - small.mean(), gx], axis=2) + 1e-3
            loc.append(f / np.linalg.norm(f, axis=2, keepdims=True))
        return Descriptors(out.global_, np.stack(loc).astype(np.float32))


def test_bf16_screen_gives_the_same_loops(tiny_extractor):
    """verify.mnn_screen only changes speed: the bf16 screen's detector publishes exactly the fp32
    detector's loops, with the same MNN counts, on real corridor frames."""
    model = _LargeMapTiny(tiny_extractor)
    cfg = _cfg(**{"verify.min_matches": 200})
    runs = []
    for gemm in (None, configured_screen("bf16")):
        det, t, seen = LoopClosureDetector(cfg, model, gemm), 0, []
        for split in ("ref", "query"):
            for i in range(0, 40, 2):
                res = det.process(Frame(t, corridor_image(split, i)))
                seen += [(lp.query_id, lp.match_id, lp.local_matches) for lp in res.loop_closures]
                t += NS // 2
            t += 100 * NS
        runs.append(seen)
    assert runs[0] and runs[0] == runs[1]
