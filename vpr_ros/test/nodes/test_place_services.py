"""Places with names in the real node (issue 13): label_place, find_place, the place topic and OCR,
over real rclpy and DDS in a private network namespace. Scenarios run in place_scenarios.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from vpr_ros.core.config import config_from_flat
from vpr_ros.core.detector import LoopClosureDetector
from vpr_ros.core.text.place_text import PlaceLabel
from vpr_ros.core.map.snapshot import load_keyframes
from vpr_ros.core.types import Frame

from conftest import scenario_runner
from revisit_data import corridor_revisit
from tiny_extractor import TinyExtractor

HERE = Path(__file__).resolve().parent
FRAMES = 12  # per traversal
# What the scenario gives: the newest keyframe, and ids 4 and 6 (query keyframes match them on the revisit).
LABELS = {FRAMES - 1: "Room 214", 4: "Kitchen", 6: "Stairs"}


@pytest.fixture
def run_places(netns_ok: None, tmp_path: Path):
    run = scenario_runner(HERE / "place_scenarios.py", tmp_path, "--frames", str(FRAMES))
    return lambda name, timeout, *args: run(name, *args, timeout=timeout)


def offline_places(live_map: Path) -> list[tuple[int, int, list[str], bool]]:
    """(query id, match id, labels, also a loop closure) of every query keyframe whose best accepted
    match is labelled, from the core detector with the node's parameters (a live map: float16
    candidates, as in the node)."""
    detector = LoopClosureDetector(config_from_flat({"verify.min_matches": 60}), TinyExtractor())
    detector.attach_store(live_map)
    frames = corridor_revisit(FRAMES)
    for stamp, image in frames[:FRAMES]:
        detector.process(Frame(stamp, image))
    for key, name in LABELS.items():
        detector.add_label(key, PlaceLabel(name))
    expected = []
    for stamp, image in frames[FRAMES:]:
        result = detector.process(Frame(stamp, image))
        best = next((v for v in result.verifications if v.accepted), None)
        if best is not None and best.candidate.keyframe_id in LABELS:
            match = detector.keyframe(best.candidate.keyframe_id)
            loop = any(lc.match_id == match.id for lc in result.loop_closures)
            expected.append((result.keyframe.id, match.id, [LABELS[match.id]], loop))
    detector.detach_store()
    return expected


def test_labels_survive_save_and_restart_and_revisits_publish_the_place(run_places, tmp_path):
    labels_yaml = tmp_path / "labels.yaml"
    labels_yaml.write_text("- label: Exit\n  keyframe: {robot: robot, session: session, id: 5}\n")
    r = run_places("labels", 70, "--labels-yaml", str(labels_yaml))
    logs = r["_logs"]
    assert r["settled_ref"] and r["settled_query"], logs
    assert r["refused_rc"] == 2 and "text.labels_yaml" in r["refused_log"] and "labels.yaml" in r["refused_log"], (
        r["refused_log"])
    ok, message, *_ = r["before_frames"]
    assert not ok and "no keyframe yet" in message, message
    assert r["label_current"][0] and r["label_current"][2:] == [FRAMES - 1, "robot", "session"], r["label_current"]
    assert [(answer[0], answer[2]) for answer in r["label_id"]] == [(True, 4), (True, 6)], r["label_id"]
    # Bad requests: success false, a message saying what was wrong, and the node keeps running.
    bad = r["bad"]
    assert not any(answer[0] for answer in bad.values()), bad
    assert "empty" in bad["empty"][1] and "no keyframe 999" in bad["unknown_id"][1], bad
    assert "'nobody'" in bad["other_robot"][1] and "-5" in bad["negative"][1] and "256" in bad["too_long"][1], bad

    find = r["find"]
    assert find["room 214"]["success"] and find["room 214"]["matches"][0]["id"] == FRAMES - 1, find
    assert find["room 214"]["matches"][0]["labels"] == ["Room 214"]
    assert find["KITCHEN"]["matches"][0]["id"] == 4 and find["KITCHEN"]["matches"][0]["labels"] == ["Kitchen"]
    assert not find[""]["success"] and "empty" in find[""]["message"]
    assert not find["?!"]["success"] and "no letters or digits" in find["?!"]["message"], find["?!"]
    huge = r["find_huge"]
    assert not huge["success"] and "keep it to 256" in huge["message"] and len(huge["message"]) < 300, huge
    assert find["nothing like it"]["success"] and find["nothing like it"]["matches"] == [], find
    # Issue 19: another room number is never a match ("Room 214" shares only "room" with "room 215").
    other = find["room 215"]
    assert other["success"] and other["matches"] == [], other
    assert other["message"].startswith("no exact match for 'room 215'"), other
    assert "no exact match" not in find["room 214"]["message"], find["room 214"]
    assert len(r["find_limit"]["matches"]) == 1, r["find_limit"]

    # Revisiting the labelled places: `place` carries the labels and the evidence, exactly where the
    # core's best accepted match is a labelled keyframe.
    expected = offline_places(tmp_path / "offline_live")
    assert expected, "the revisit must match a labelled place offline for this test to mean anything"
    got = [(p["query_id"], p["match_id"], p["labels"], p["loop_closure"]) for p in r["places"]]
    assert got == expected, logs
    for p in r["places"]:
        assert p["score"] >= 60 and p["method"] == "mnn" and p["frame_id"] == "map" and p["robot"] == "robot"
        assert p["match_stamp_ns"] == p["match_id"] * 10**9 and p["stamp_ns"] == (100 + p["query_id"] - FRAMES) * 10**9
    d = r["diag"]
    assert (d["labels"], d["labelled_keyframes"], d["places_published"]) == ("3", "3", str(len(expected))), d
    assert d["ocr.mode"] == "off" and r["alive"] and r["rc"] == 0, logs

    # The live map holds the labels as they were given; the snapshot reloads with them in a new node.
    _, kept = load_keyframes(tmp_path / "live", "tiny-pixels@test")
    assert {kf.id: [(lb.label, lb.source) for lb in kf.labels] for kf in kept if kf.labels} == {
        FRAMES - 1: [("Room 214", "user")], 4: [("Kitchen", "test_harness")], 6: [("Stairs", "user")]}
    assert r["save"][0], r["save"]
    again = r["after_restart"]
    assert again["kitchen"]["matches"][0]["id"] == 4 and again["room 214"]["matches"][0]["id"] == FRAMES - 1, again
    assert again["exit"]["matches"][0]["id"] == 5 and again["exit"]["matches"][0]["labels"] == ["Exit"], again
    fuzzy = again["cafeteria"]["matches"]
    assert fuzzy and fuzzy[0]["id"] == 4 and fuzzy[0]["how"] == "embedding", again["cafeteria"]
    assert r["diag_again"]["labels"] == "5", r["diag_again"]
    # A label alone (no new keyframe) makes autosave rewrite a snapshot map: it survived the SIGKILL.
    assert r["label_again"][0] and r["autosaved_label"], (r["label_again"], logs)
    _, snap = load_keyframes(tmp_path / "again_map", "tiny-pixels@test")
    assert [lb.label for lb in snap[2].labels] == ["Lobby"] and [lb.label for lb in snap[5].labels] == ["Exit"]


def test_ocr_in_the_node_puts_text_in_the_map_and_a_missing_ocr_package_only_disables_ocr(run_places, tmp_path):
    r = run_places("ocr", 60)
    logs = r["_logs"]
    assert r["settled"] == [True, True, True] and r["read"], logs
    d = r["diag"]["ocr"]
    assert d["ocr.mode"] == "background" and d["ocr.read"] == "2" and d["ocr.failed"] == "0", d
    # The SIMULATED sign on keyframe 0 was read, joined the map and answers a text query.
    hit = r["find"]["ocr"]["matches"][0]
    assert hit["id"] == 0 and hit["how"] == "token" and "214" in hit["evidence"], r["find"]
    _, kept = load_keyframes(tmp_path / "ocr_live", "tiny-pixels@test")
    assert kept[0].text is not None and any("214" in t.text for t in kept[0].text), kept[0].text
    assert kept[1].text is not None  # read too; the plain frame may show some text of its own
    assert int(d["text_keyframes"]) >= 1 and float(d["ocr.ms_mean"]) > 0, d
    # Inline: the detector read each keyframe before verifying it; the text rule counted its candidates.
    inline = r["diag"]["inline"]
    assert inline["ocr.mode"] == "inline" and "ocr.read" not in inline, inline
    assert r["find"]["inline"]["matches"][0]["id"] == 0, r["find"]["inline"]
    assert all(f"text_rule.{k}" in inline for k in ("none", "agree", "conflict", "vetoed")), inline
    # Without rapidocr the node says so once, runs without OCR, and answers queries (no text: no match).
    b = r["diag"]["blind"]
    assert b["ocr.mode"] == "unavailable" and b["frames_processed"] == "2", b
    assert "rapidocr" in r["log_blind"] and "runs without" in r["log_blind"], r["log_blind"]
    assert r["find"]["blind"]["success"] and r["find"]["blind"]["matches"] == []
    assert r["alive"] == [True, True, True] and r["rc"] == [0, 0, 0], logs
