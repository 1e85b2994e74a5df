"""Multi-robot loop closure with real nodes: decentralised (fleet.enabled) and central (central_node).

Robot A ("ra") replays the Corridor reference traversal, robot B ("rb") the query traversal of the
same places; the inter-robot loops both robots publish must be what one offline detector finds on
A's frames followed by B's (the "central" answer). Scenarios run in fleet_scenarios.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from vpr_ros.core.config import config_from_flat
from vpr_ros.core.detector import LoopClosureDetector
from vpr_ros.core.map.snapshot import load_keyframes
from vpr_ros.core.types import Frame

from conftest import scenario_runner
from revisit_data import corridor_revisit
from tiny_extractor import TinyExtractor

HERE = Path(__file__).resolve().parent
FRAMES = 20


@pytest.fixture(scope="module")
def offline_loops() -> list[Any]:
    """The central answer: one detector, A's frames then B's, float32 descriptors, same parameters."""
    detector = LoopClosureDetector(config_from_flat({"verify.min_matches": 60}), TinyExtractor())
    loops = []
    for stamp, image in corridor_revisit(FRAMES):
        loops += detector.process(Frame(stamp, image)).loop_closures
    assert len(loops) >= 5, "the revisit must close loops offline for these tests to mean anything"
    return loops


@pytest.fixture
def run_fleet(netns_ok: None, tmp_path: Path):
    run = scenario_runner(HERE / "fleet_scenarios.py", tmp_path, "--frames", str(FRAMES))
    return lambda name, timeout, *args: run(name, *args, timeout=timeout)


def assert_same_loops(got: list[dict[str, Any]], expected: list[Any], logs: str, float16: bool) -> None:
    """Same loops as the offline detector: pairs, ranks and streaks exactly; with float16 descriptors
    and features on the wire (decentralised) MNN counts may differ by a tie or two."""
    assert [(m["query_stamp_ns"], m["match_stamp_ns"]) for m in got] == [
        (e.query_stamp_ns, e.match_stamp_ns) for e in expected], logs
    for m, e in zip(got, expected):
        assert (m["retrieval_rank"], m["consistent_keyframes"]) == (e.retrieval_rank, e.consistent_keyframes), logs
        assert m["local_matches"] == pytest.approx(e.local_matches, abs=2 if float16 else 0)
        assert m["global_similarity"] == pytest.approx(e.global_similarity, abs=2e-3 if float16 else 1e-6)
        assert (m["query_robot_id"], m["match_robot_id"]) == ("rb", "ra")  # both robot ids on the loop
        assert m["descriptor_model"] == "tiny-pixels@test"


def test_decentralised_fleet_matches_central_answer_survives_rejoin_and_refuses_other_models(
        run_fleet, offline_loops):
    budget = 8000  # bytes/s for robot A: its 20 keyframes (~32 kB) need >= 3 s beyond the 8 kB burst
    r = run_fleet("decentral", 85, "--budget", str(budget))
    logs = r["_logs"]
    assert r["settled_a"] and r["b_has_a"] and r["settled_b"], logs
    # The budget held A's broadcast back (keyframes waited in its outbox) and B still got all of it.
    assert r["outbox_a_at_settle"] > 0 and r["b_has_a_after_sec"] >= 2.5, logs
    first = r["first"]
    assert_same_loops(first["rb"], offline_loops, logs, float16=True)
    # the matched robot republishes every inter-robot loop (in the order it received them)
    by_pair = lambda loops: sorted(loops, key=lambda d: (d["query_id"], d["match_id"]))  # noqa: E731
    assert by_pair(first["ra"]) == by_pair(first["rb"]), logs
    a, b = r["diag_a"], r["diag_b"]
    assert int(b["fleet.remote_keyframes"]) == int(a["fleet.remote_keyframes"]) == FRAMES, logs
    assert int(b["fleet.inter_robot_loops.found"]) == len(offline_loops) == int(a["fleet.inter_robot_loops.received"])
    # Features cross the network on demand only: B asked for candidates, never A's whole map twice.
    assert 0 < int(b["fleet.features_requested"]) <= FRAMES * 5 and b["fleet.fetch_failures"] == "0", logs
    assert int(a["fleet.bytes_sent.features"]) > 0 and int(b["fleet.bytes_sent.features"]) == 0
    # Bytes per keyframe: 768 float16 values + id + stamp + CDR framing, amortised over batches of 10.
    per_kf_b = float(b["fleet.bytes_per_keyframe"])
    assert 2 * 768 < per_kf_b < 2 * 768 + 200 + int(b["fleet.bytes_sent.loops"]) / FRAMES, b
    assert int(a["fleet.keyframes_sent"]) == int(b["fleet.keyframes_sent"]) == FRAMES
    # Robot C runs another model: everything it received was refused, counted and logged.
    c = r["diag_c"]
    assert int(c["fleet.refused.model_mismatch"]) >= 2 and c["fleet.remote_keyframes"] == "0", logs
    assert r["first"]["rc"] == [] and "refused input of robot 'ra'" in r["log"], logs
    # B leaves and rejoins (a new process, no map): it gets A's history and closes the same loops.
    assert r["rc_b"] == 0 and r["b2_has_a"] and r["b2_remote_before_play"] == FRAMES, logs
    assert r["settled_b2"], logs
    assert_same_loops(r["second"]["rb"], offline_loops, logs, float16=True)
    assert r["second"]["ra"] == r["second"]["rb"], logs
    assert r["alive"] == [True, True, True] and r["rc"] == [0, 0, 0], logs


def test_central_node_serves_two_namespaces_with_one_shared_map(run_fleet, offline_loops, tmp_path):
    r = run_fleet("central", timeout=60)
    logs = r["_logs"]
    assert r["settled_a"] and r["settled_b"] and r["alive"], logs
    assert_same_loops(r["loops"]["rb"], offline_loops, logs, float16=False)  # in memory: float32, exact
    assert r["loops"]["ra"] == r["loops"]["rb"], logs
    assert r["diag_b"]["fleet.remote_keyframes"] == str(FRAMES) and r["diag_b"]["fleet.mode"] == "central"
    assert r["rc"] == 0, logs
    # One writer: the first robot's map holds both robots' keyframes, with their local features.
    _, saved = load_keyframes(tmp_path / "shared_map", "tiny-pixels@test")
    assert sorted({kf.robot_id for kf in saved}) == ["ra", "rb"] and len(saved) == 2 * FRAMES
    assert all(kf.local is not None for kf in saved)
