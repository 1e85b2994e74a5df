"""End to end with real OCR: SIMULATED plated Corridor frames, OcrReader inline, the text rule vetoes
a look-alike door and keeps the right one (a few frames: a few seconds)."""

import pytest

import vpr_ros.cli.demo as demo
from conftest import TinyExtractor
from vpr_ros.cli.demo_text import plated_corridor
from vpr_ros.models.text_readers import attach_text_reader
from vpr_ros.core.config import config_from_flat
from vpr_ros.core.detector import LoopClosureDetector
from vpr_ros.core.types import Frame

pytest.importorskip("rapidocr_onnxruntime", reason="OCR is optional: pip install -r requirements/ocr.txt")

NS = 1_000_000_000


def test_ocr_reads_plates_and_the_rule_vetoes_the_other_door():
    plated = plated_corridor(demo.corridor_frames("ref", 20), demo.corridor_frames("query", 20))
    # Places 7 and 17 are the middles of doors 1 and 3: one plate each, different numbers.
    assert plated.ref_plates[7] != plated.ref_plates[17]
    cfg = config_from_flat({"text.ocr": "inline", "text.rule": True, "detector.min_loop_gap_sec": 1.0,
                            "verify.min_matches": 1, "verify.temporal_consistency": 1, "index.top_k": 2})
    det = LoopClosureDetector(cfg, TinyExtractor())
    attach_text_reader(det)
    det.process(Frame(0, plated.ref[17]))
    det.process(Frame(NS, plated.ref[7]))
    step = det.process(Frame(10 * NS, plated.query[7]))
    assert {r.text for r in step.keyframe.text} == set(plated.query_plates[7])
    assert {r.text for r in det.keyframe(0).text} == set(plated.ref_plates[17])
    assert step.text_rule["agree"] == 1 and step.text_rule["conflict"] == 1
    vetoed = [v for v in step.verifications if v.candidate.keyframe_id == 0]
    assert vetoed and not vetoed[0].accepted and vetoed[0].score == 0.0
    assert [lc.match_id for lc in step.loop_closures] == [1]
