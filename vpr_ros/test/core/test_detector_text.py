"""The text rule inside the detector: real corridor frames, the tiny extractor, text given directly."""

from conftest import corridor_image
from vpr_ros.core.config import config_from_flat
from vpr_ros.core.detector import LoopClosureDetector
from vpr_ros.core.text.place_text import TextReading
from vpr_ros.core.types import Frame

NS = 1_000_000_000
FRAMES = 30


def _run(extractor, ref_text, query_text, rule=True, **kw):
    """Ref pass, a 100 s pause, then the query pass of the same places; text per frame index."""
    cfg = {"detector.min_loop_gap_sec": 30.0, "verify.min_matches": 30, "verify.temporal_consistency": 2,
           "text.rule": rule}
    cfg.update(kw)
    det = LoopClosureDetector(config_from_flat(cfg), extractor)
    steps, t = [], 0
    for split, text, pause in (("ref", ref_text, 0), ("query", query_text, 100 * NS)):
        t += pause
        for i in range(FRAMES):
            global_ = extractor.extract([corridor_image(split, i)])
            steps.append(det.process_descriptors(t, global_.global_[0], global_.local[0],
                                                 text=lambda i=i: text(i)))
            t += NS // 2
    return det, steps


def _loops(steps):
    return [(lp.query_id, lp.match_id) for s in steps for lp in s.loop_closures]


def _plate(i):
    return (TextReading(f"Room {200 + 2 * (i // 5)}", 0.97),)


def test_conflicting_plate_vetoes_loops_and_agreeing_text_keeps_them(tiny_extractor):
    _, plain = _run(tiny_extractor, _plate, _plate, rule=False)
    assert _loops(plain), "without text the revisit must close loops for this test to mean anything"
    assert all(s.text_rule == {} for s in plain)  # rule off: no counters

    # Every query frame reads another number than any ref frame: each loop is vetoed.
    det, vetoed = _run(tiny_extractor, _plate, lambda i: (TextReading("Room 999", 0.97),))
    assert _loops(vetoed) == []
    assert sum(s.text_rule.get("vetoed", 0) for s in vetoed) >= len(_loops(plain))
    assert det.keyframe(FRAMES).text == (TextReading("Room 999", 0.97),)  # the keyframe keeps its text

    # Same text everywhere: every candidate agrees, so every loop of the plain run is kept.
    same = lambda i: (TextReading("Corridor 7B", 0.97),)  # noqa: E731
    _, agreed = _run(tiny_extractor, same, same)
    assert set(_loops(plain)) <= set(_loops(agreed))
    assert sum(s.text_rule.get("agree", 0) for s in agreed) > 0
    assert sum(s.text_rule.get("conflict", 0) for s in agreed) == 0


def test_plates_keep_loops_at_the_same_place_only(tiny_extractor):
    _, steps = _run(tiny_extractor, _plate, _plate)
    loops = _loops(steps)
    assert loops
    # query keyframe ids follow the FRAMES ref ids; a surviving loop shares the query's plate
    assert all((q - FRAMES) // 5 == m // 5 for q, m in loops), loops


def test_unread_or_low_confidence_text_changes_nothing(tiny_extractor):
    _, plain = _run(tiny_extractor, _plate, _plate, rule=False)
    unsure = lambda i: (TextReading(f"Room {900 + i}", 0.3),)  # noqa: E731
    for ref_text, query_text in ((_plate, unsure), (_plate, lambda i: ())):
        _, steps = _run(tiny_extractor, ref_text, query_text)
        assert _loops(steps) == _loops(plain)
        assert sum(s.text_rule["none"] for s in steps) > 0


class _Sign:
    """A text reader that reads the frame's mean brightness as a room number (the wiring, no OCR)."""

    def __init__(self):
        self.calls = 0

    def read(self, image):
        self.calls += 1
        return (TextReading(f"{int(image.mean())}", 0.9),)


def test_text_reader_runs_once_per_keyframe_only(tiny_extractor):
    det = LoopClosureDetector(config_from_flat({"keyframes.min_gap_sec": 1.0, "text.rule": True}), tiny_extractor)
    det.text_reader = _Sign()
    image = corridor_image("ref", 0)
    first = det.process(Frame(0, image))
    skipped = det.process(Frame(NS // 2, image))
    assert first.keyframe.text == (TextReading(f"{int(image.mean())}", 0.9),)
    assert skipped.keyframe is None and det.text_reader.calls == 1
    assert "ocr" in first.timings_ms
