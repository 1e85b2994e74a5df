"""The text rule of verification (core/text/rule.py): distinctive text, agree/conflict/none, veto and boost."""

import dataclasses
import math

import pytest

from vpr_ros.core.config import config_from_flat
from vpr_ros.core.text.place_text import TextReading
from vpr_ros.core.text.rule import COUNTERS, PlaceText, TextRule, compare_text, distinctive_text
from vpr_ros.core.types import Candidate, Verification


def read(*texts, confidence=0.95):
    return tuple(TextReading(t, confidence) for t in texts)


def decide(text0, text1, min_confidence=0.8):
    return compare_text(distinctive_text(text0, min_confidence), distinctive_text(text1, min_confidence))


def test_distinctive_text_keeps_codes_and_rare_words_only():
    text = distinctive_text(read("Room 214", "EXIT", "Kitchen", "Floor 2", "B12", "ab"), 0.8)
    assert text.codes == {"214", "b12"}  # "2" (a single digit) names no place
    assert text.words == {"kitchen"}  # room, exit, floor: signage seen everywhere; "ab": too short
    assert distinctive_text(read("Room 214", confidence=0.79), 0.8) == PlaceText()
    assert distinctive_text(read("Room 214", confidence=math.nan), 0.0) == PlaceText()
    assert not distinctive_text(None, 0.8) and not distinctive_text((), 0.8)


def test_ocr_slips_between_digits_are_read_as_digits():
    assert distinctive_text(read("2I4", "3O5", "2l6"), 0.8).codes == {"214", "305", "216"}
    # A letter at the edge of a run is a real room letter, not a slip.
    assert distinctive_text(read("B12", "12S"), 0.8).codes == {"b12", "12s"}
    assert decide(read("Room 2O4"), read("204")) == "agree"
    assert decide(read("2I6"), read("214")) == "conflict"


@pytest.mark.parametrize("text0, text1, expected", [
    (read("214"), read("Room 214"), "agree"),
    (read("214"), read("216"), "conflict"),
    (read("Room 214"), read("ROOM 216", "Exit"), "conflict"),
    # One side read two plates (between two doors): a shared plate agrees, none shared conflicts.
    (read("214", "216"), read("216"), "agree"),
    (read("214", "216"), read("218"), "conflict"),
    # A clipped plate ("14" of "214") is not evidence of another place.
    (read("14"), read("214"), "none"),
    # Numbers decide over words when both sides have numbers.
    (read("Kitchen 214"), read("Kitchen 216"), "conflict"),
    (read("Kitchen"), read("kitchen"), "agree"),
    (read("Kitchen"), read("Library"), "none"),  # words never conflict
    (read("Kitchen"), read("216"), "none"),
    # No confident distinctive text on one side: nothing to compare.
    (read("214"), read("216", confidence=0.5), "none"),
    (read("214"), read("Exit", "2"), "none"),
    (read("214"), (), "none"),
    (None, read("214"), "none"),
])
def test_compare_text(text0, text1, expected):
    assert decide(text0, text1) == expected
    assert decide(text1, text0) == expected  # symmetric


def verification(key, score, accepted, similarity=0.8, method="mnn", rank=None, matches=None):
    cand = Candidate(key, similarity, key if rank is None else rank)
    return Verification(cand, int(score) if matches is None else matches, 400, 0, float(score), accepted, method)


def rule(**kw):
    base = {"text.rule": True, "verify.min_matches": 120}
    base.update(kw)
    cfg = config_from_flat(base)
    return TextRule(cfg.text, cfg.verify)


def test_conflict_vetoes_an_accepted_candidate_and_the_next_one_wins():
    vs = [verification(0, 190, True), verification(1, 150, True)]
    out, counts = rule().apply(read("214"), vs, [read("216"), read("Room 214")])
    assert [v.candidate.keyframe_id for v in out] == [1, 0]  # re-sorted: the veto's score is 0
    assert out[0].accepted and out[0].score == pytest.approx(150 * 1.25)
    assert not out[1].accepted and out[1].score == 0.0 and out[1].local_matches == 190
    assert counts == {"unread": 0, "none": 0, "agree": 1, "conflict": 1, "vetoed": 1,
                      "boosted_accept": 0, "best_changed": 1}
    assert set(counts) == set(COUNTERS)


def test_penalty_lowers_the_score_and_keeps_a_strong_candidate():
    r = rule(**{"text.conflict": "penalty", "text.conflict_penalty": 0.7})
    out, counts = r.apply(read("214"), [verification(0, 190, True), verification(1, 160, True)],
                          [read("216"), read("216")])
    assert [v.accepted for v in out] == [True, False]  # 133 >= 120 stays, 112 < 120 drops
    assert [v.score for v in out] == pytest.approx([133.0, 112.0])
    assert counts["conflict"] == 2 and counts["vetoed"] == 1 and counts["best_changed"] == 0
    # A penalty never accepts a candidate the verifier rejected.
    out, _ = r.apply(read("214"), [verification(0, 300, False, similarity=0.1)], [read("216")])
    assert not out[0].accepted


def test_agreement_boost_can_accept_but_not_past_the_similarity_floor():
    r = rule(**{"verify.min_global_similarity": 0.5})
    out, counts = r.apply(read("214"), [verification(0, 100, False)], [read("214")])
    assert out[0].accepted and out[0].score == pytest.approx(125.0) and counts["boosted_accept"] == 1
    out, counts = r.apply(read("214"), [verification(0, 90, False)], [read("214")])
    assert not out[0].accepted and counts["boosted_accept"] == 0  # 112.5 < 120
    out, _ = r.apply(read("214"), [verification(0, 100, False, similarity=0.4)], [read("214")])
    assert not out[0].accepted  # the global similarity gate is not boosted


def test_boost_with_fundamental_compares_inliers_and_needs_unboosted_mnn_count():
    r = rule(**{"verify.method": "mnn+fundamental", "verify.min_inliers": 40})
    v = Verification(Candidate(0, 0.8, 0), 130, 400, 35, 35.0, False, "mnn+fundamental")
    out, _ = r.apply(read("214"), [v], [read("214")])
    assert out[0].accepted and out[0].score == pytest.approx(43.75)
    few = dataclasses.replace(v, local_matches=110)
    out, _ = r.apply(read("214"), [few], [read("214")])
    assert not out[0].accepted


def test_no_text_changes_nothing():
    vs = [verification(0, 190, True), verification(1, 100, False)]
    for text0, texts1, counter in [(None, [read("216"), read("214")], "unread"),
                                   (read("214"), [None, None], "unread"),
                                   ((), [read("216"), read("214")], "none"),
                                   (read("214", confidence=0.3), [read("216"), read("214")], "none")]:
        out, counts = rule().apply(text0, vs, texts1)
        assert out == vs
        assert counts[counter] == 2 and counts["vetoed"] == counts["best_changed"] == 0


def test_rule_mismatched_lengths_raise():
    with pytest.raises(ValueError):
        rule().apply(read("214"), [verification(0, 190, True)], [])
