"""Issue 19: a node fed odometry at the image rate gives (nearly) every keyframe its pose, and counts
the frames it processed without one (diagnostics ``odom_missing``). Real node processes over real
DDS in a private network namespace (odom_scenarios.py); the buffer itself: test_odom_buffer.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import scenario_runner

HERE = Path(__file__).resolve().parent
START_NS, PERIOD_NS = 1_000_000_000, 250_000_000


@pytest.fixture
def run_odom(netns_ok: None, tmp_path: Path):
    return scenario_runner(HERE / "odom_scenarios.py", tmp_path)


def test_odometry_at_the_image_rate_gives_every_keyframe_its_pose(run_odom):
    r = run_odom("image_rate", "--frames", "24", timeout=120.0)
    logs = r["_logs"]
    assert r["settled"] and r["rc"] == {"od": 0, "nw": 0}, logs
    frames = r["frames"]
    od, nw = r["poses"]["od"], r["poses"]["nw"]
    assert len(od) == frames and len(nw) == frames, logs  # 1 m per frame: every frame is a keyframe
    with_pose = [(stamp, x) for stamp, x in od if x is not None]
    # Each keyframe carries the pose of its own stamp (not the previous frame's).
    assert all(x == pytest.approx((stamp - START_NS) / PERIOD_NS) for stamp, x in with_pose), od
    # Nearly every one: the first frame (no odometry flowing yet) goes without, and under heavy load
    # an odometry message may come later than odom.wait_sec.
    assert len(with_pose) >= frames - 3, (od, r["diag"])
    d = r["diag"]["od"]
    assert int(d["odom_missing"]) == frames - len(with_pose), d
    # How many frames had to wait depends on the machine's load (odometry may already be there);
    # test_odom_buffer.py checks the wait itself with odometry that arrives 20 ms late.
    assert int(d["keyframes"]) == frames and int(d["odometry_received"]) == frames, d
    # Without the wait (odom.wait_sec 0) the frames are processed before their odometry arrives:
    # most go without a pose, and the diagnostics say how many.
    missing = sum(1 for _, x in nw if x is None)
    # (how many depends on the load: a slow frame finds its odometry already there)
    assert int(r["diag"]["nw"]["odom_missing"]) == missing, r["diag"]["nw"]
