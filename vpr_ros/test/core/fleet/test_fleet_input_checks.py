"""The ROS-free checks of what peers send (issue 18): validation, budgets, the fleet loop guard."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from vpr_ros.core.fleet.budget import RemoteBudget, remote_keyframe_bytes
from vpr_ros.core.fleet.loop_guard import LoopGuard, LoopKeys
from vpr_ros.core.fleet.remote_keyframes import check_batch, decode_answer, encode_batch, encode_locals, head
from vpr_ros.core.fleet.validation import Refused, check_service_name, stamp_ns
from vpr_ros.core.types import Keyframe


def _kfs(n: int, dim: int = 8) -> list[Keyframe]:
    g = np.random.default_rng(0).standard_normal((n, dim)).astype(np.float32)
    return [Keyframe(id=i, stamp_ns=10 + i, robot_id="r", session_id="s", global_=g[i],
                     local=np.ones((2, 3, 4), np.float32)) for i in range(n)]


def _reason(fn, *args) -> str:
    with pytest.raises(Refused) as exc:
        fn(*args)
    return exc.value.reason


@pytest.mark.parametrize("name", ["bad name!", "{sub}", "/a/" + "b" * 10_000, "relative/name", "/a//b", "/9x"])
def test_unusable_service_names_are_refused(name):
    assert _reason(check_service_name, name) == "name"


def test_every_batch_field_is_checked():
    batch = encode_batch(_kfs(3), "m", 8, "/r/fleet/get_features")
    check_batch(batch, "m", 8)
    cases = {"name": dataclasses.replace(batch, robot_id="x" * 300),
             "id": dataclasses.replace(batch, ids=np.array([0, 2**63, 1], np.uint64)),
             "stamp": dataclasses.replace(batch, stamps_ns=np.array([1, -1, 2], np.int64)),
             "malformed": dataclasses.replace(batch, descriptors=batch.descriptors[:-2]),
             "model_mismatch": dataclasses.replace(batch, dim=9),
             "pose": dataclasses.replace(batch, poses=np.full((3, 4, 4), np.inf)),
             "nonfinite": dataclasses.replace(batch, descriptors=np.full(24, np.nan, "<f2").tobytes())}
    for reason, bad in cases.items():
        assert _reason(check_batch, bad, "m", 8) == reason
    assert _reason(stamp_ns, 1, 10**9) == "stamp"
    assert len(head(batch, 2).ids) == 2 and len(head(batch, 2).descriptors) == 2 * 8 * 2


def test_feature_answers_are_checked_per_keyframe():
    kfs = _kfs(3)
    kfs[1].local = np.ones((2, 3, 5), np.float32)  # another model's channel count
    ids, shapes, data = encode_locals(kfs)
    got, refused = decode_answer(ids, shapes, data, [0, 1], channels=4)
    assert list(got) == [0] and sorted(r.reason for r in refused) == ["id", "shape"]  # 2 was not asked for
    assert _reason(decode_answer, ids, shapes[:-1], data, [0], 4) == "malformed"
    assert _reason(decode_answer, ids, shapes, data + b"\0\0", [0], 4) == "malformed"


def test_budget_per_peer_and_in_all():
    b = RemoteBudget(peer_bytes=10 * remote_keyframe_bytes(8), total_bytes=15 * remote_keyframe_bytes(8),
                     keyframe_bytes=remote_keyframe_bytes(8))
    assert b.reserve("a", 25) == 10 and b.reserve("a", 1) == 0
    b.settle("a", 10, 7)  # 3 were already held: their reservation comes back
    assert b.peer_held("a") == 7 and b.reserve("b", 20) == 8 and b.reserve("c", 1) == 0


def test_loop_guard_waits_for_the_query_keyframe():
    guard: LoopGuard[str] = LoopGuard(wait_sec=5.0)
    keys = LoopKeys("p", "s", 3, 30)
    assert not guard.offer(keys, "loop", now=0.0)
    assert guard.ready(1.0) == ([], [])
    guard.seen("p", "s", [3], [30])
    assert guard.ready(2.0) == (["loop"], [])
    assert guard.offer(keys, "again", now=3.0)
    assert _reason(guard.offer, LoopKeys("p", "s", 3, 31), "forged", 3.0) == "loop_sender"
    assert not guard.offer(LoopKeys("p", "s", 99, 1), "never", now=3.0)
    out, refused = guard.ready(9.0)
    assert out == [] and [r.reason for r in refused] == ["loop_sender"]
