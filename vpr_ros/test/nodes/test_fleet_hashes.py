"""Hashes on the fleet link: the messages through the real rosidl types and CDR, and two real nodes where
the receiver knows the sender's keyframes by their 64-byte hashes only (fleet_hash_scenarios.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("vpr_ros_msgs.msg")
from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402
from vpr_ros_msgs.msg import KeyframeDescriptors  # noqa: E402
from vpr_ros_msgs.srv import GetKeyframeFeatures  # noqa: E402

from vpr_ros.core.config import config_from_flat  # noqa: E402
from vpr_ros.core.detector import LoopClosureDetector  # noqa: E402
from vpr_ros.core.fleet.remote_keyframes import decode_batch, decode_globals, encode_batch, encode_globals  # noqa: E402
from vpr_ros.core.types import Frame, Keyframe  # noqa: E402
from vpr_ros.nodes.fleet import batch_to_msg, msg_to_batch  # noqa: E402

from conftest import scenario_runner  # noqa: E402
from hash_extractor import HashingTinyExtractor  # noqa: E402
from revisit_data import corridor_revisit  # noqa: E402

HERE = Path(__file__).resolve().parent
FRAMES = 8


def _keyframes(n, dim=2048):
    rng = np.random.default_rng(0)
    g = rng.standard_normal((n, dim)).astype(np.float32)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    return [Keyframe(id=100 + i, stamp_ns=5 * 10**9 + i, robot_id="r1", session_id="s", global_=g[i],
                     hash=rng.integers(0, 256, 64, dtype=np.uint8)) for i in range(n)]


def test_hash_only_batch_and_float_answer_survive_cdr():
    from builtin_interfaces.msg import Time

    kfs = _keyframes(20)
    one_more = len(serialize_message(batch_to_msg(encode_batch(kfs, "m@abc", 2048, "/s", "hash"), Time(sec=1))))
    kfs = kfs[:10]
    sizes = {}
    for send in ("float16", "hash"):
        msg = batch_to_msg(encode_batch(kfs, "selavprpp-base-rerank@abc", 2048, "/r1/fleet/get_features", send),
                           Time(sec=1))
        wire = serialize_message(msg)
        sizes[send] = len(wire)
        back = decode_batch(msg_to_batch(deserialize_message(wire, KeyframeDescriptors)), "selavprpp-base-rerank@abc",
                            2048, "hash", 64)
        assert [k.id for k in back] == [k.id for k in kfs]
        assert all(np.array_equal(b.hash, k.hash) for b, k in zip(back, kfs))
        assert all(b.global_.size == (2048 if send == "float16" else 0) for b in back)
    assert sizes["float16"] - sizes["hash"] == 10 * 2 * 2048  # 4 kB of float16 a keyframe left out
    # Each keyframe more costs its 64-byte hash, its id and its stamp: 80 bytes on the wire.
    assert (one_more - len(serialize_message(batch_to_msg(encode_batch(kfs, "m@abc", 2048, "/s", "hash"),
                                                           Time(sec=1))))) / 10 == 64 + 8 + 8
    answer = GetKeyframeFeatures.Response(success=True, keyframe_ids=[101, 103], encoding="float16",
                                          global_descriptors=encode_globals([kfs[1], kfs[3]]))
    back = deserialize_message(serialize_message(answer), GetKeyframeFeatures.Response)
    got = decode_globals(list(back.keyframe_ids), bytes(back.global_descriptors), 2048)
    assert float(got[103] @ kfs[3].global_) > 1 - 1e-5
    assert GetKeyframeFeatures.Request().global_only is False  # old requesters still get local features


@pytest.fixture(scope="module")
def offline_loops():
    config = config_from_flat({"verify.min_matches": 60, "index.first_pass": "hash"})
    detector = LoopClosureDetector(config, HashingTinyExtractor())
    return [lp for s, im in corridor_revisit(FRAMES) for lp in detector.process(Frame(s, im)).loop_closures]


def test_receiver_with_hashes_only_finds_loops_and_fetches_floats_from_the_sender(netns_ok, tmp_path, offline_loops):
    out = scenario_runner(HERE / "fleet_hash_scenarios.py", tmp_path, "--frames", str(FRAMES))("hashes", timeout=60)
    logs = out["_logs"]
    assert out["settled_a"] and out["b_has_a"] and out["settled_b"] and out["alive"] == [True, True], logs
    assert len(offline_loops) >= 3
    assert [(m["query_stamp_ns"], m["match_stamp_ns"]) for m in out["loops_b"]] == [
        (e.query_stamp_ns, e.match_stamp_ns) for e in offline_loops], logs
    assert all((m["query_robot_id"], m["match_robot_id"]) == ("rb", "ra") for m in out["loops_b"])
    a, b = out["diag_a"], out["diag_b"]
    per_keyframe = float(a["fleet.bytes_sent.descriptors"]) / float(a["fleet.keyframes_sent"])
    assert per_keyframe < 200, per_keyframe  # hashes, not 2 x 768 B of float16 descriptors
    assert 0 < float(b["fleet.globals_received"]) <= float(b["fleet.globals_requested"]) <= FRAMES, b
    assert float(a["fleet.bytes_sent.globals"]) > 0 and float(b["fleet.features_received"]) > 0
    assert out["rc"] == [0, 0], logs
