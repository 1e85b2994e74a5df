"""Fleet input from hostile or broken peers (issue 18, classes 10-14), with a real node process.

A harness on the DDS domain plays an honest peer ("peer": 20 keyframes, a features service) and
every kind of bad participant; robot "ra" (fleet.enabled) must refuse, count and go on. The
scenario is fleet_scenarios.hostile.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import scenario_runner

HERE = Path(__file__).resolve().parent
FRAMES = 20


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, netns_ok) -> dict:
    tmp = tmp_path_factory.mktemp("hostile")
    r = scenario_runner(HERE / "fleet_scenarios.py", tmp, "--frames", str(FRAMES))("hostile", timeout=170)
    assert r["ra_up"] and r["settled"], r["_logs"]
    return r


def _n(diag: dict, key: str) -> int:
    return int(float(diag.get(f"fleet.refused.{key}", diag.get(key, "0"))))


def test_bad_batches_are_refused_by_reason_and_the_node_survives_restarts(hostile):
    """Class 11 (and the receipt half of 10): names, ids >= 2^63, stamps, NaN, poses, sizes."""
    r, logs = hostile, hostile["_logs"]
    assert r["alive_after_hostile"], logs
    d = r["diag_hostile"]
    for reason, n in r["hostile"].items():
        assert _n(d, reason) == n, (reason, d, logs)
    assert _n(d, "fleet.remote_keyframes") == FRAMES  # only the honest peer's keyframes joined the map
    # transient_local replays the same batches (and the forged loops of class 14) to the restarted
    # node: refused again, alive again
    assert r["alive_after_restart"] and r["restart_up"], logs
    for reason, n in r["hostile"].items():
        assert _n(r["diag_restart"], reason) >= n, (reason, r["diag_restart"], logs)
    assert r["rc"] == [0, 0], logs


def test_wrong_feature_shapes_are_refused_and_the_rest_verified(hostile):
    """Class 12: 15-channel answers for a 16-channel model are refused and counted as fetch
    failures; the frames are not blamed ("unusable image") and the other candidates close loops."""
    d, logs = hostile["diag_play"], hostile["_logs"]
    assert _n(d, "shape") >= 1 and _n(d, "fleet.fetch_failures") >= _n(d, "shape"), d
    assert _n(d, "fleet.features_received") >= 1 and _n(d, "bad_input.unusable_image") == 0, d
    assert _n(d, "frames_processed") == FRAMES and _n(d, "frames_failed") == 0, d
    assert len(hostile["found"]) >= 2 and {m["match_robot_id"] for m in hostile["found"]} == {"peer"}, logs


def test_one_peer_cannot_fill_the_map(hostile):
    """Class 13: 20 000 keyframes from two rogue robots against 1.0 MB per peer and 1.5 MB in all
    (7 344 B per 768-d keyframe: 136 per peer, 204 in all; the honest peer holds 20 of them)."""
    d = hostile["diag_budget"]
    assert _n(d, "fleet.remote_keyframes") == 204, d
    assert _n(d, "budget") == 20_000 + FRAMES - 204, d
    rss0, rss1 = hostile["rss_kb"]
    print(f"rss before {rss0} kB, after {rss1} kB")
    assert rss1 - rss0 < 60_000, hostile["rss_kb"]  # unbounded, 20 000 keyframes take ~145 MB


def test_forged_fleet_loops_are_not_republished(hostile):
    """Class 14: a loop onto "ra" must name an own keyframe with its stamp, finite numbers, and a
    query keyframe its robot broadcast with that stamp; only the honest loop is republished."""
    r, logs = hostile, hostile["_logs"]
    assert r["found"], logs
    assert [(m["query_robot_id"], m["query_id"], m["match_id"], m["score"]) for m in r["republished"]] == [
        ("peer", r["honest"]["query_id"], r["honest"]["match_id"], r["honest"]["score"])], logs
    before, after = r["loops_before"], r["diag_loops"]
    for reason, n in {"loop_target": 1, "nonfinite": 1, "id": 1, "loop_sender": 2}.items():
        assert _n(after, reason) - _n(before, reason) == n, (reason, after)
    assert _n(after, "fleet.inter_robot_loops.received") - _n(before, "fleet.inter_robot_loops.received") == 1
