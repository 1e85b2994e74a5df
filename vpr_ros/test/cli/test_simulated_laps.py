"""Consistency by place end to end: a SIMULATED three-lap Corridor stream (cli/simulated_laps.py) through
`vpr-ros replay` with the real default model. Lap 3's best matches alternate between laps 1 and 2 of
the same place; the old id rule loses lap 3, the place rule (verify.consistency_by_place) keeps it.
About 20 s on 2 cores."""

import csv
import json

import numpy as np
import pytest

from vpr_ros.cli.main import main
from vpr_ros.cli.simulated_laps import simulated_laps_ground_truth, simulated_three_laps, write_simulated_three_laps

COUNT = 40  # frames per lap


@pytest.fixture(scope="module")
def laps_bag(tmp_path_factory):
    laps = simulated_three_laps(count=COUNT)
    return laps, *write_simulated_three_laps(tmp_path_factory.mktemp("laps"), laps)


def test_simulated_laps_and_their_ground_truth():
    laps = simulated_three_laps(count=6)
    assert len(laps.frames) == 18 and laps.label == "simulated"
    assert list(laps.lap) == [0] * 6 + [1] * 6 + [2] * 6 and list(laps.place[12:]) == list(range(6))
    assert laps.source[12:] == ("ref", "query") * 3
    assert np.all(np.diff(laps.stamps_ns) > 0)
    gt = simulated_laps_ground_truth(laps)
    assert gt[12, 0] and gt[12, 8] and gt[12, 2] and not gt[12, 3] and not gt[12, 13] and not gt[0, 1]
    assert np.array_equal(gt, gt.T)
    # lap 3 is no copy of lap 1 or 2
    assert not np.array_equal(laps.frames[12], laps.frames[0])


def _replay(bag, gt, out, by_place):
    assert main(["replay", str(bag), "--image-topic", "/camera/image_raw", "--gt", str(gt), "--out", str(out),
                 "--no-progress", "--set", f"verify.consistency_by_place={str(by_place).lower()}"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    with open(out / "loop_closures.csv") as f:
        lap3 = [r for r in csv.DictReader(f) if int(r["query_frame"]) >= 2 * COUNT]
    return metrics, lap3


def test_place_rule_keeps_the_third_lap(laps_bag, tmp_path, capsys):
    _, bag, gt = laps_bag
    old, old_lap3 = _replay(bag, gt, tmp_path / "ids", False)
    new, new_lap3 = _replay(bag, gt, tmp_path / "places", True)
    assert old["queries_with_true_loop"] == new["queries_with_true_loop"] == 2 * COUNT
    # the old rule: lap 3 alternates, so no two successive matches agree
    assert len(old_lap3) <= 2
    # the place rule: most of lap 3, matching both earlier laps, and no wrong loop more
    assert sum(r["correct"] == "1" for r in new_lap3) >= 0.6 * COUNT
    assert {int(r["match_frame"]) < COUNT for r in new_lap3} == {True, False}
    assert new["recall"] >= old["recall"] + 0.25
    assert new["false_positives"] <= old["false_positives"]
    assert new["precision"] >= 0.95
