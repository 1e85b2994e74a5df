"""Hashes on the fleet wire (core/fleet/remote_keyframes.py): batches with and of hashes only, what each
kind of receiver refuses, and the float descriptors fetched on demand."""

from __future__ import annotations

import numpy as np
import pytest

from vpr_ros.core.errors import InputError
from vpr_ros.core.fleet.remote_keyframes import (decode_batch, decode_globals, encode_batch, encode_globals, head)
from vpr_ros.core.fleet.validation import Refused
from vpr_ros.core.types import Keyframe

DIM = 32
MODEL = "hashy@test"


def _keyframes(n, hashed=True):
    rng = np.random.default_rng(0)
    g = rng.standard_normal((n, DIM)).astype(np.float32)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    return [Keyframe(id=10 + i, stamp_ns=i * 10**9, robot_id="ra", session_id="s", global_=g[i],
                     hash=rng.integers(0, 256, 64, dtype=np.uint8) if hashed else None) for i in range(n)]


def test_hash_only_batch_is_64_bytes_a_keyframe_and_decodes_to_hash_only_keyframes():
    kfs = _keyframes(6)
    full = encode_batch(kfs, MODEL, DIM)
    only = encode_batch(kfs, MODEL, DIM, send="hash")
    assert (full.wire_bytes - only.wire_bytes) / 6 == 2 * DIM  # the float16 descriptor is what is left out
    assert only.wire_bytes == 6 * (16 + 64) and only.encoding == "none" and only.descriptors == b""
    back = decode_batch(only, MODEL, DIM, first_pass="hash", hash_bytes=64)
    assert [k.id for k in back] == [k.id for k in kfs]
    assert all(b.global_.shape == (0,) and np.array_equal(b.hash, k.hash) for b, k in zip(back, kfs))
    with_floats = decode_batch(full, MODEL, DIM, first_pass="hash", hash_bytes=64)
    assert all(b.global_.shape == (DIM,) and np.array_equal(b.hash, k.hash) for b, k in zip(with_floats, kfs))
    assert [k.id for k in decode_batch(head(only, 2), MODEL, DIM, "hash", 64)] == [10, 11]
    with pytest.raises(InputError, match="gives none"):
        encode_batch(_keyframes(2, hashed=False), MODEL, DIM, send="hash")


@pytest.mark.parametrize("case,reason", [("hash_only_to_float_first", "first_pass"),
                                         ("no_hash_to_hash_first", "first_pass"),
                                         ("hash_size", "malformed"), ("hash_encoding", "malformed")])
def test_receivers_refuse_what_they_cannot_index(case, reason):
    kfs = _keyframes(3)
    if case == "hash_only_to_float_first":
        batch, first_pass = encode_batch(kfs, MODEL, DIM, send="hash"), "float"
    elif case == "no_hash_to_hash_first":
        batch, first_pass = encode_batch(_keyframes(3, hashed=False), MODEL, DIM), "hash"
    else:
        import dataclasses
        batch = encode_batch(kfs, MODEL, DIM, send="hash")
        batch = dataclasses.replace(batch, hashes=batch.hashes[:-1]) if case == "hash_size" else \
            dataclasses.replace(batch, hash_encoding="lsb")
        first_pass = "hash"
    with pytest.raises(Refused) as err:
        decode_batch(batch, MODEL, DIM, first_pass, 64)
    assert err.value.reason == reason


def test_float_descriptors_fetched_on_demand_round_trip_and_are_checked():
    kfs = _keyframes(4)
    data = encode_globals(kfs[1:3])
    got = decode_globals([11, 12], data, DIM)
    assert sorted(got) == [11, 12] and all(float(got[k.id] @ k.global_) > 1 - 1e-5 for k in kfs[1:3])
    with pytest.raises(Refused, match="bytes"):
        decode_globals([11, 12, 13], data, DIM)
    bad = np.full((1, DIM), np.nan, np.float16).tobytes()
    with pytest.raises(Refused) as err:
        decode_globals([11], bad, DIM)
    assert err.value.reason == "nonfinite"


def test_receiver_with_hashes_only_finds_the_loops_fetching_floats_and_features_on_demand():
    from vpr_ros.core.config import config_from_flat
    from vpr_ros.core.detector import LoopClosureDetector
    from vpr_ros.core.fleet.remote_keyframes import decode_locals, encode_locals
    from vpr_ros.core.types import Frame

    from hash_extractor import HashingTinyExtractor
    from revisit_data import corridor_revisit

    n = 8
    frames = corridor_revisit(n)
    config = {"verify.min_matches": 60, "index.first_pass": "hash"}
    a = LoopClosureDetector(config_from_flat({**config, "detector.robot_id": "a"}), HashingTinyExtractor())
    b = LoopClosureDetector(config_from_flat({**config, "detector.robot_id": "b"}), HashingTinyExtractor())
    own = [a.process(Frame(s, im)).keyframe for s, im in frames[:n]]
    batch = encode_batch(own, a.model_id, 768, send="hash")
    assert b.add_remote_keyframes(decode_batch(batch, b.model_id, 768, "hash", 64)) == n
    assert all(kf.global_.size == 0 for kf in b.keyframes)  # B knows A's keyframes by their hashes only
    floats_asked: list[int] = []

    def fetch_global(keyframes):
        floats_asked.extend(kf.id for kf in keyframes)
        got = decode_globals([kf.id for kf in keyframes], encode_globals([own[kf.id] for kf in keyframes]), 768)
        for kf in keyframes:
            kf.global_ = got[kf.id]

    def fetch_local(candidates, keyframes):
        got = decode_locals(*encode_locals([own[kf.id] for kf in keyframes]))
        for kf in keyframes:
            kf.local = got[kf.id]

    b.fetch_global, b.fetch_local = fetch_global, fetch_local
    loops = [lp for s, im in frames[n:] for lp in b.process(Frame(s, im)).loop_closures]
    offline = LoopClosureDetector(config_from_flat(config), HashingTinyExtractor())
    expected = [lp for s, im in frames for lp in offline.process(Frame(s, im)).loop_closures]
    assert len(expected) >= 4
    assert [(lp.query_stamp_ns, lp.match_stamp_ns, lp.retrieval_rank) for lp in loops] == [
        (e.query_stamp_ns, e.match_stamp_ns, e.retrieval_rank) for e in expected]
    assert all((lp.query_robot_id, lp.match_robot_id) == ("b", "a") for lp in loops)
    assert sorted(floats_asked) == list(range(n))  # each of A's floats crossed once, when a Hamming candidate
