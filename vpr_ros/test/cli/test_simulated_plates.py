"""The SIMULATED plated Corridor (cli/simulated_plates.py) and the demo's text helpers (cli/demo_text.py)."""

import numpy as np
import pytest

import vpr_ros.cli.demo as demo
from conftest import CORRIDOR, TinyExtractor
from vpr_ros.cli.demo_text import ocr_metrics, plated_corridor
from vpr_ros.cli.simulated_plates import door_numbers, simulated_plated_corridor, visible_doors
from vpr_ros.core.config import config_from_flat
from vpr_ros.core.errors import InputError
from vpr_ros.core.eval.groundtruth import KeyframeRecord, load_vprbench_gt
from vpr_ros.core.text.place_text import TextReading

PAIRS = load_vprbench_gt(CORRIDOR / "ground_truth_new.npy")
N = 30


@pytest.fixture(scope="module")
def plated():
    return plated_corridor(demo.corridor_frames("ref", N), demo.corridor_frames("query", N))


def test_same_place_same_number_and_other_places_other_numbers(plated):
    assert plated.ref[0].shape == (480, 640, 3) and plated.label.startswith("SIMULATED")
    # Query frame i is at the place of ref frame i (the middle of its ground-truth window).
    assert plated.query_plates == plated.ref_plates
    for i in range(N):
        assert plated.ref_plates[i], f"place {i} shows no plate"
        for j in range(N):
            shared = set(plated.ref_plates[i]) & set(plated.query_plates[j])
            if j in PAIRS[i]:  # a true loop never meets a conflict made by the door boundaries
                assert shared, (i, j)
            if abs(i - j) > 6:  # two doors apart: nothing shared
                assert not shared, (i, j)
    # Same place in both traversals, yet not the same pixels (another frame, jittered plate).
    assert not np.array_equal(plated.ref[7], plated.query[7])


def test_plates_are_deterministic_and_seeded():
    ref, query = demo.corridor_frames("ref", 6), demo.corridor_frames("query", 6)
    a = simulated_plated_corridor(ref, query, PAIRS, seed=3)
    b = simulated_plated_corridor(ref, query, PAIRS, seed=3)
    c = simulated_plated_corridor(ref, query, PAIRS, seed=4)
    assert all(np.array_equal(x, y) for x, y in zip(a.ref + a.query, b.ref + b.query))
    assert a.ref_plates == b.ref_plates and a.ref_plates != c.ref_plates


def test_door_boundaries():
    assert visible_doors(5, 5) == [(1, 0.0), (0, 5.0)]  # first place of door 1 still sees door 0
    assert visible_doors(9, 5) == [(1, 4.0), (2, -1.0)]  # last place already sees door 2
    assert visible_doors(7, 5) == [(1, 2.0)]
    assert visible_doors(5, 5, "none") == [] and visible_doors(9, 5, "none") == []
    assert visible_doors(7, 5, "none") == [(1, 2.0)]
    numbers = door_numbers(23, seed=0)
    assert len(set(numbers)) == 23 and all(len(n) == 3 for n in numbers)
    with pytest.raises(InputError, match="boundary"):
        visible_doors(1, 5, "half")
    with pytest.raises(InputError, match="three-digit"):
        door_numbers(500)


def test_ocr_metrics_score_reads_against_pasted_plates(plated):
    rec = [KeyframeRecord("r", "s", i, i, frame_index=i) for i in (0, 4, 7, N + 7)]
    texts = [(TextReading(plated.ref_plates[0][0], 0.99),),
             (TextReading(plated.ref_plates[4][0], 0.99),),  # one of two plates: missed
             (TextReading("999", 0.99), TextReading(plated.ref_plates[7][0], 0.99)),  # misread
             None]  # not read
    m = ocr_metrics(list(zip(rec, texts)), 0.8, plated, num_ref=N)
    assert (m["keyframes"], m["keyframes_read"], m["keyframes_with_distinctive_text"]) == (4, 3, 3)
    assert (m["plates_read_exactly"], m["plates_missed"], m["plates_misread"]) == (1, 1, 1)
    assert m["plates"].startswith("SIMULATED")


def test_demo_replays_the_plated_corridor(tmp_path):
    # No OCR here (text.ocr off): the plated frames go through the bags and the detector.
    cfg = config_from_flat({"verify.min_matches": 30, "detector.min_loop_gap_sec": 1.0})
    metrics = demo.run_demo(tmp_path / "demo", cfg, TinyExtractor(), single_session=True, count=10,
                            progress=False, plates="both")
    assert metrics["frames"].startswith("SIMULATED plates") and "640x480" in metrics["frames"]
    assert metrics["num_keyframes"] == 20 and "ocr" not in metrics and metrics["text_rule"] == {}
