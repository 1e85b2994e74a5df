"""The goals of issue 20, asserted through the user's path on a small SIMULATED (RENDERED from real
photographs) set: rosbag2 with CameraInfo (+ depth) -> ``vpr-ros replay`` (default model lite0-gem,
geometry auto) -> the LoopClosure MCAP bag read back -> errors and NEES against the exact truth.

The set: seed 26, 3 rooms x 5 pairs (the last query of each room strongly blurred) and 3
look-alike pairs, 640x480. The margins hold for these seeded scenes; sets this small vary by seed
(docs/geometry.md lists six), the bench (``vpr-ros bench geometry --rendered``, docs/benchmarks.md)
measures 62 pairs. Each
assertion fails with the issue 19 estimator (``BEFORE_SETTINGS``: NEES 15-1500, look-alikes valid,
blurred and large-error single-camera poses valid; docs/geometry.md lists which fix each one guards).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from vpr_ros.cli.bench.geometry_rendered import measure_group, rendered_set, summarise
from vpr_ros.cli.bench.pose_consistency import CHI2_95

SET = {"rooms": 3, "pairs_per_room": 5, "blurred_per_room": 1, "look_alike_pairs": 3, "seed": 26, "width": 640}


def rendered_results(work: Path, settings: list[str] | None = None, tag: str = "") -> dict[str, Any]:
    """Both cases' summaries (``summarise``) and loops of the set, replayed with ``settings``."""
    groups = rendered_set(**SET)
    rows: dict[str, list[dict[str, Any]]] = {"rgbd": [], "single": []}
    for k, (name, cam, pairs) in enumerate(groups):
        for case, r in measure_group(name, cam, pairs, work, SET["seed"] * 1000 + 100 * k, settings, tag).items():
            rows[case] += r
    queries = SET["rooms"] * SET["pairs_per_room"]
    return {case: summarise(rows[case], queries, case == "rgbd") | {"rows": rows[case]} for case in rows}


def goal_failures(results: dict[str, Any]) -> list[str]:
    """The issue 20 goals the results miss (empty: all met)."""
    m, s = results["rgbd"], results["single"]
    fails = []
    if not (m["valid"] >= 8 and 4.0 <= m["nees"]["mean"] <= 9.0):
        fails.append(f"metric mean NEES {m['nees']['mean']} of {m['valid']} valid loops not in [4, 9]")
    if not m["nees"]["inside_95"] >= 0.9:
        fails.append(f"metric inside the 95 % bound {m['nees']['inside_95']} < 0.9")
    if not (s["valid"] >= 6 and 3.0 <= s["nees"]["median"] <= 12.0):
        fails.append(f"single-camera median NEES {s['nees']['median']} of {s['valid']} valid loops not in [3, 12]")
    if s["large_errors"]:
        fails.append(f"{s['large_errors']} valid single-camera poses with large errors")
    if s["median_rot_err_deg"] is None or s["median_rot_err_deg"] >= 0.3:
        fails.append(f"single-camera median rotation error {s['median_rot_err_deg']} >= 0.3 deg")
    for case, r in results.items():
        if r["look_alike"]["valid"]:
            fails.append(f"{case}: {r['look_alike']['valid']} look-alike pairs valid")
        bound = CHI2_95[6 if case == "rgbd" else 5]
        outside = [x["nees"] for x in r["rows"] if x["kind"] == "blurred" and x["valid"] and x["nees"] > bound]
        if outside:
            fails.append(f"{case}: valid blurred poses outside the 95 % bound (NEES {outside})")
    return fails


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return rendered_results(tmp_path_factory.mktemp("rendered"))


def test_the_set_has_what_the_goals_need(results):
    m, s = results["rgbd"], results["single"]
    assert m["loops"] == s["loops"] == 15 and m["blurred"]["loops"] == s["blurred"]["loops"] == 3
    assert m["look_alike"]["loops"] == s["look_alike"]["loops"] == 3


def test_issue_20_goals_hold_on_rendered_rooms_through_replay(results):
    assert goal_failures(results) == []
    # Measured on these scenes (docs/geometry.md): metric mean 6.6 with 12 of 13 inside, single-camera
    # median 5.6 of 12 valid, median rotation error 0.056 deg; no look-alike and no blurred single-camera
    # pose valid. The issue 19 estimator: 21.9 and 4 of 13, 248 and 0.65 deg, 3 + 3 look-alikes valid.
    m, s = results["rgbd"], results["single"]
    assert 5.0 < m["nees"]["mean"] < 8.0 and 4.0 < s["nees"]["median"] < 8.0
