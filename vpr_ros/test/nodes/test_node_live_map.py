"""A node with map.save_path appends each keyframe to a live map: SIGKILL loses none already made."""

from __future__ import annotations

from vpr_ros.core.map import live_map
from vpr_ros.core.map.snapshot import load_keyframes, read_meta


def test_sigkilled_node_keeps_every_keyframe_in_its_live_map(run_scenario, tmp_path):
    r = run_scenario("append_kill", "--frames", "12", timeout=60)
    logs = r["_logs"] + r["log"]
    assert r["alive"], logs
    n = int(r["keyframes"])
    assert n >= 4, logs
    assert live_map.is_live_map(tmp_path / "live")
    meta, kept = load_keyframes(tmp_path / "live", "tiny-pixels@test")
    # Killed after the node reported n keyframes: all of them are on disk (n-1 at worst, the one
    # being written when the kill came; the node was idle, so none was).
    assert len(kept) == n, logs
    assert [kf.id for kf in kept] == list(range(n))
    assert all(kf.local is not None for kf in kept) and meta["local_dtype"] == "float16"
    # ~/save_map to another path wrote a snapshot (a live map itself) of what existed then.
    success, count, message = r["snapshot"]
    assert success and count == int(r["keyframes_at_snapshot"]) >= 1, message
    assert read_meta(tmp_path / "snapshot")["num_keyframes"] == count
