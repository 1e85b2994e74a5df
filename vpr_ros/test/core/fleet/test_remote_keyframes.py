"""Fleet mode without ROS: the wire codec, the byte budget and the detector's remote keyframes."""

from __future__ import annotations

import numpy as np
import pytest

from vpr_ros.core.fleet.bandwidth import TokenBucket
from vpr_ros.core.config import config_from_flat
from vpr_ros.core.detector import LoopClosureDetector
from vpr_ros.core.errors import FleetError
from vpr_ros.core.fleet.remote_keyframes import decode_batch, decode_locals, encode_batch, encode_locals
from vpr_ros.core.types import Frame, Keyframe

from revisit_data import corridor_revisit
from tiny_extractor import TinyExtractor


def _keyframes(n: int, dim: int = 64, robot: str = "a", seed: int = 0) -> list[Keyframe]:
    rng = np.random.default_rng(seed)
    g = rng.standard_normal((n, dim)).astype(np.float32)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    return [Keyframe(id=i, stamp_ns=10**9 * i, robot_id=robot, session_id="s", global_=g[i],
                     local=rng.standard_normal((3, 4, 8)).astype(np.float32),
                     pose=None if i == 1 else np.eye(4) * (i + 1)) for i in range(n)]


def test_batch_round_trip_is_float16_close_and_keeps_ids_stamps_and_poses():
    kfs = _keyframes(4)
    batch = encode_batch(kfs, "m@1", 64, "/a/fleet/get_features")
    assert batch.wire_bytes == 4 * 16 + 4 * 64 * 2 + 4 * 16 * 8  # float16: half of float32
    remote = decode_batch(batch, "m@1", 64)
    assert [(k.id, k.stamp_ns, k.robot_id, k.session_id, k.local) for k in remote] == [
        (k.id, k.stamp_ns, "a", "s", None) for k in kfs]
    for r, k in zip(remote, kfs):
        assert np.linalg.norm(r.global_) == pytest.approx(1.0, abs=1e-6)
        assert float(r.global_ @ k.global_) > 1 - 1e-5
    assert remote[1].pose is None and np.array_equal(remote[2].pose, np.eye(4) * 3)


@pytest.mark.parametrize("model, dim", [("other@2", 64), ("m@1", 32)])
def test_another_model_or_dimension_is_refused_with_both_names(model, dim):
    batch = encode_batch(_keyframes(2), model, dim)
    with pytest.raises(FleetError, match="refused") as exc:
        decode_batch(batch, "m@1", 64)
    assert model in str(exc.value) and "m@1" in str(exc.value)


def test_malformed_batches_are_refused():
    batch = encode_batch(_keyframes(3), "m@1", 64)
    import dataclasses
    with pytest.raises(FleetError, match="malformed"):
        decode_batch(dataclasses.replace(batch, descriptors=batch.descriptors[:-2]), "m@1", 64)
    nan = np.frombuffer(batch.descriptors, "<f2").copy()
    nan[5] = np.nan
    with pytest.raises(FleetError, match="unusable"):
        decode_batch(dataclasses.replace(batch, descriptors=nan.tobytes()), "m@1", 64)
    with pytest.raises(FleetError, match="encoded"):
        decode_batch(dataclasses.replace(batch, encoding="float64"), "m@1", 64)


def test_local_features_round_trip_and_damage_is_named():
    kfs = _keyframes(3)
    kfs[1].local = None  # nothing to send for it: skipped, not an empty record
    ids, shapes, data = encode_locals(kfs)
    assert ids == [0, 2] and shapes == [3, 4, 8, 3, 4, 8] and len(data) == 2 * 96 * 2
    got = decode_locals(ids, shapes, data)
    assert np.allclose(got[2], kfs[2].local, atol=2e-3) and got[2].dtype == np.float32
    with pytest.raises(FleetError, match="truncated"):
        decode_locals(ids, shapes, data[:-1])
    with pytest.raises(FleetError, match="more than"):
        decode_locals(ids, shapes, data + b"\0\0")


def test_token_bucket_holds_broadcasts_and_lets_answers_run_into_debt():
    bucket = TokenBucket(rate=1000, burst=1000, now=0.0)
    assert bucket.try_spend(800, 0.0) and not bucket.try_spend(800, 0.0)  # 200 left
    assert bucket.try_spend(800, 0.6)  # 200 + 600 refilled
    bucket.spend(5000, 0.6)  # an answer a peer waits for goes out anyway ...
    assert bucket.available(0.6) == pytest.approx(-5000)
    assert not bucket.try_spend(100, 5.5) and bucket.try_spend(100, 5.7)  # ... and delays broadcasts 5 s
    assert bucket.try_spend(10**9, 1000.0)  # larger than the burst: sent on a full bucket
    assert TokenBucket(0, 0, 0.0).try_spend(10**12, 0.0)  # 0 = unlimited


def test_remote_keyframes_are_deduplicated_and_own_echoes_skipped():
    det = LoopClosureDetector(config_from_flat({"detector.robot_id": "b", "detector.session_id": "s"}),
                              TinyExtractor())
    remote = decode_batch(encode_batch(_keyframes(3, 768), det.model_id, 768), det.model_id, 768)
    assert det.add_remote_keyframes(remote) == 3 and det.add_remote_keyframes(remote) == 0
    own = decode_batch(encode_batch(_keyframes(2, 768, robot="b"), det.model_id, 768), det.model_id, 768)
    assert det.add_remote_keyframes(own) == 0 and det.num_keyframes == 3


FRAMES = 12


def _fleet_pair(fetch_ok: bool):
    """A plays the reference traversal, B gets A's batch and the query traversal (in memory)."""
    frames = corridor_revisit(FRAMES)
    a = LoopClosureDetector(config_from_flat({"verify.min_matches": 60, "detector.robot_id": "a"}), TinyExtractor())
    b = LoopClosureDetector(config_from_flat({"verify.min_matches": 60, "detector.robot_id": "b"}), TinyExtractor())
    own = [a.process(Frame(s, im)).keyframe for s, im in frames[:FRAMES]]
    b.add_remote_keyframes(decode_batch(encode_batch(own, a.model_id, 768), b.model_id, 768))
    asked: list[int] = []

    def fetch(candidates, keyframes):
        asked.extend(kf.id for kf in keyframes)
        if fetch_ok:
            got = decode_locals(*encode_locals([own[kf.id] for kf in keyframes]))
            for kf in keyframes:
                kf.local = got[kf.id]

    b.fetch_local = fetch
    loops = [lp for s, im in frames[FRAMES:] for lp in b.process(Frame(s, im)).loop_closures]
    return loops, asked, frames


def test_in_memory_fleet_finds_the_offline_loops_with_features_fetched_on_demand():
    loops, asked, frames = _fleet_pair(fetch_ok=True)
    offline = LoopClosureDetector(config_from_flat({"verify.min_matches": 60}), TinyExtractor())
    expected = [lp for s, im in frames for lp in offline.process(Frame(s, im)).loop_closures]
    assert len(expected) >= 4
    assert [(lp.query_stamp_ns, lp.match_stamp_ns, lp.retrieval_rank, lp.consistent_keyframes) for lp in loops] == [
        (e.query_stamp_ns, e.match_stamp_ns, e.retrieval_rank, e.consistent_keyframes) for e in expected]
    assert all(abs(lp.local_matches - e.local_matches) <= 2 for lp, e in zip(loops, expected))
    assert all((lp.query_robot_id, lp.match_robot_id) == ("b", "a") for lp in loops)
    assert len(set(asked)) == len(asked) <= FRAMES  # each keyframe's features crossed once, on demand


def test_a_candidate_whose_features_never_arrive_is_skipped_not_fatal():
    loops, asked, _ = _fleet_pair(fetch_ok=False)  # before the fix: InputError on every query frame
    assert asked and loops == []


def test_keypoint_geometry_round_trips_and_damage_is_named():
    from vpr_ros.core.fleet.remote_keyframes import decode_geometry, encode_geometry
    from vpr_ros.core.types import KeyframeGeometry

    rng = np.random.default_rng(3)
    pts = rng.standard_normal((5, 3)).astype(np.float32)
    pts[1] = np.nan  # no depth for that keypoint
    g = KeyframeGeometry(keypoints=rng.random((5, 2), np.float32) * 100,
                         descriptors=rng.integers(0, 255, (5, 32), np.uint8), points3d=pts, image_hw=(480, 640),
                         K=np.arange(9.0).reshape(3, 3), D=np.array([0.1, -0.2, 0, 0, 0]),
                         distortion_model="plumb_bob", T_body_cam=np.eye(4) * 2)
    back = decode_geometry(encode_geometry(g))
    assert back.image_hw == (480, 640) and back.distortion_model == "plumb_bob"
    for name in ("keypoints", "descriptors", "K", "D", "T_body_cam"):
        assert np.array_equal(getattr(back, name), getattr(g, name)), name
    assert np.array_equal(back.points3d, g.points3d, equal_nan=True) and back.descriptors.dtype == np.uint8
    assert decode_geometry(encode_geometry(None)) is None
    fields = encode_geometry(g)
    fields["descriptors"] = fields["descriptors"][:-1]
    with pytest.raises(FleetError, match="malformed"):
        decode_geometry(fields)
