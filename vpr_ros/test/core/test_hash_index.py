"""The hash first pass (core/hash_index.py) against the official SelaVPR++ rule, written out here
independently: Hamming top-N with ties in insertion order, then a stable sort by float L2 distance,
then top-k; and the detector and configuration around it."""

from __future__ import annotations

import numpy as np
import pytest

from vpr_ros.core.config import IndexConfig, config_from_flat
from vpr_ros.core.detector import LoopClosureDetector
from vpr_ros.core.errors import ConfigError, InputError
from vpr_ros.core.hash_index import HashIndex, HashKeyframeIndex
from vpr_ros.core.types import Frame

from hash_extractor import HashingTinyExtractor
from revisit_data import corridor_revisit

DIM = 16


def _popcount(a: bytes, b: bytes) -> int:
    return bin(int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).count("1")


def official(codes, floats, q_code, q_float, n, k, exclude=()):
    """Positions (insertion order) the official search returns: Hamming top-n, ties by position; then
    re-ordered by float64 Euclidean distance, equal distances in first-pass order; the first k."""
    ham = sorted((_popcount(bytes(c), bytes(q_code)), pos) for pos, c in enumerate(codes) if pos not in exclude)[:n]
    first = [pos for _, pos in ham]
    dist = [float(np.linalg.norm(floats[p].astype(np.float64) - q_float.astype(np.float64))) for p in first]
    return [first[i] for i in sorted(range(len(first)), key=lambda i: (dist[i], i))][:k]


def _tied_data(rng, n):
    """Codes from 5 bases with 0-1 flipped bits (many equal Hamming distances) and floats from 7
    vectors (exactly equal distances)."""
    bases = rng.integers(0, 256, (5, 64), dtype=np.uint8)
    codes = bases[rng.integers(0, 5, n)]
    codes[rng.random(n) < 0.4, 3] ^= 0x10
    vecs = rng.standard_normal((7, DIM)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    return codes, vecs[rng.integers(0, 7, n)]


@pytest.mark.parametrize("n_keyframes,candidates", [(60, 10), (60, 100), (400, 100)])
def test_search_is_hamming_top_n_then_stable_float_order_with_ties(n_keyframes, candidates):
    rng = np.random.default_rng(n_keyframes + candidates)
    codes, floats = _tied_data(rng, n_keyframes)
    keys = 10_000 - 7 * np.arange(n_keyframes)  # inserted in descending key order: ties go by insertion
    index = HashKeyframeIndex(DIM, 512, IndexConfig(hash_candidates=candidates, hash_factory="BFlat"))
    index.add(keys[:25], floats[:25], codes[:25])
    index.add(keys[25:], floats[25:], codes[25:])
    for qi in range(12):
        q_code, q_float = codes[rng.integers(n_keyframes)].copy(), floats[rng.integers(n_keyframes)]
        if qi % 3 == 0:
            q_code[0] ^= 0x01
        exclude_pos = set(rng.choice(n_keyframes, 5, replace=False).tolist()) if qi % 2 else set()
        got, sims = index.search(q_float, 8, {int(keys[p]) for p in exclude_pos}, q_code)
        want = official(codes, floats, q_code, q_float, candidates, 8, exclude_pos)
        assert got.tolist() == [int(keys[p]) for p in want]
        assert np.allclose(sims, floats[want] @ q_float, atol=1e-6)


def test_the_float_nearest_outside_the_hamming_candidates_is_never_returned():
    rng = np.random.default_rng(3)
    codes = rng.integers(0, 256, (30, 64), dtype=np.uint8)
    floats = rng.standard_normal((30, DIM)).astype(np.float32)
    query_code, query_float, target = codes[0], floats[29], 29  # keyframe 29's float is the query's
    for target_code, found in ((query_code, True), (~query_code, False)):  # Hamming 0, then 512
        index = HashKeyframeIndex(DIM, 512, IndexConfig(hash_candidates=5))
        index.add(np.arange(30), floats, np.vstack([codes[:29], target_code[None]]))
        got, _ = index.search(query_float, 5, (), query_code)
        assert len(got) == 5 and (target in got.tolist()) == found
        if found:
            assert got[0] == target


def test_floats_source_leaves_out_candidates_without_a_float():
    rng = np.random.default_rng(4)
    codes, floats = _tied_data(rng, 20)
    unknown = {2, 5, 11}
    seen = []

    def source(keys):
        seen.append(list(keys))
        return [None if k in unknown else floats[k] for k in keys]

    index = HashKeyframeIndex(DIM, 512, IndexConfig(hash_candidates=100), floats=source)
    index.add(np.arange(20), None, codes)
    got, _ = index.search(floats[0], 20, (), codes[0])
    assert seen and sorted(seen[-1]) == list(range(20))  # every Hamming candidate was asked for
    assert sorted(got.tolist()) == sorted(set(range(20)) - unknown)
    with pytest.raises(InputError, match="hash only"):
        index.reconstruct(5)


def test_auto_switches_to_binary_hnsw_above_the_threshold_and_keeps_every_code():
    rng = np.random.default_rng(5)
    codes = rng.integers(0, 256, (90, 64), dtype=np.uint8)
    index = HashIndex(512, IndexConfig(hash_auto_switch_keyframes=50))
    index.add(np.arange(40), codes[:40])
    assert index.factory == "BFlat"
    index.add(np.arange(40, 90), codes[40:])
    assert index.factory == "BHNSW32" and len(index) == 90
    assert all(index.search(codes[i], 1)[0].tolist() == [i] for i in range(0, 90, 7))


def test_configuration_errors_name_the_fix(tiny_extractor):
    with pytest.raises(ConfigError, match="selavprpp-rerank or selavprpp-base-rerank"):
        LoopClosureDetector(config_from_flat({"index.first_pass": "hash"}), tiny_extractor)
    with pytest.raises(ConfigError, match="hash_factory"):
        config_from_flat({"index.hash_factory": "HNSW32"})
    with pytest.raises(ConfigError, match="first_pass"):
        config_from_flat({"index.first_pass": "bits"})
    index = HashKeyframeIndex(DIM, 512)
    with pytest.raises(InputError, match="no hash code"):
        index.search(np.ones(DIM), 5)
    with pytest.raises(InputError, match="uint8"):
        index.add([0], np.ones((1, DIM)), np.zeros((1, 32), np.uint8))


def _run(config, frames):
    detector = LoopClosureDetector(config_from_flat(config), HashingTinyExtractor())
    return detector, [detector.process(Frame(t, image)) for t, image in frames]


def test_detector_searches_the_hash_first():
    frames = corridor_revisit(8)
    base = {"verify.min_matches": 60, "index.top_k": 3}
    _, floats = _run(base, frames)
    # With every keyframe a Hamming candidate the float re-ordering is the exact float search.
    _, full = _run({**base, "index.first_pass": "hash", "index.hash_candidates": 100}, frames)
    assert [[(v.candidate.keyframe_id, v.candidate.rank) for v in r.verifications] for r in full] == \
        [[(v.candidate.keyframe_id, v.candidate.rank) for v in r.verifications] for r in floats]
    assert [(lp.query_id, lp.match_id) for r in full for lp in r.loop_closures] == \
        [(lp.query_id, lp.match_id) for r in floats for lp in r.loop_closures]
    # With 2 Hamming candidates every candidate is one of the 2 nearest hashes.
    detector, few = _run({**base, "index.first_pass": "hash", "index.hash_candidates": 2}, frames)
    kfs = detector.keyframes
    assert all(kf.hash is not None and kf.hash.shape == (64,) and kf.hash.dtype == np.uint8 for kf in kfs)
    searched = 0
    for key, r in enumerate(r for r in few if r.keyframe is not None):
        recent = {p for p in range(key) if kfs[key].stamp_ns - kfs[p].stamp_ns < 20e9}  # detector.min_loop_gap_sec
        allowed = official([kf.hash for kf in kfs[:key]], [kf.global_ for kf in kfs[:key]], kfs[key].hash,
                           kfs[key].global_, 2, 3, recent)
        assert sorted(v.candidate.keyframe_id for v in r.verifications) == sorted(allowed)
        searched += bool(allowed)
    assert searched >= 5
