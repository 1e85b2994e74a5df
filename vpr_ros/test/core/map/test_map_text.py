"""Text read on keyframes and place labels survive save/load: snapshot maps, live maps, detector use."""

from __future__ import annotations

import os
import sqlite3

import pytest

from store_maps import DIM, MODEL, index_writer, synthetic_keyframes
from test_map_log import FP, _detector, _log
from vpr_ros.core.map import live_map, text_table
from vpr_ros.core.errors import MapStoreError
from vpr_ros.core.map.local_segments import HEADER
from vpr_ros.core.text.place_text import PlaceLabel, TextReading, tokens
from vpr_ros.core.map.snapshot import load_keyframes, save_keyframes

BOX = ((10.0, 20.0), (90.0, 20.0), (90.0, 40.0), (10.0, 40.0))
PLATE = (TextReading("ROOM 2-14", 0.97, BOX), TextReading("Café", 0.55))


def test_tokens_are_normalised_across_case_accents_punctuation_and_width():
    assert tokens("ROOM 2-14") == ["room", "2", "14"]
    assert tokens("Café  Ｎｏ.５") == ["cafe", "no", "5"]
    assert PLATE[0].digits == "214" and PLATE[1].digits == ""


def test_snapshot_map_keeps_text_none_empty_and_labels(tmp_path):
    kfs = synthetic_keyframes(3)
    kfs[0].text, kfs[1].text = PLATE, ()  # 2: never read
    kfs[1].labels = (PlaceLabel("Room 214", "user", 5), PlaceLabel("Level 2 east", "yaml", 6))
    save_keyframes(tmp_path / "m", kfs, MODEL, DIM, index_writer=index_writer(kfs))
    _, back = load_keyframes(tmp_path / "m", MODEL)
    assert back[0].text == PLATE and back[1].text == () and back[2].text is None
    assert [lb.label for lb in back[1].labels] == ["Room 214", "Level 2 east"] and back[1].labels[0].stamp_ns == 5
    assert back[0].labels == () and back[0].text[0].box == BOX


def test_live_map_updates_text_in_place_and_labels_are_durable(tmp_path):
    log, kfs = _log(tmp_path / "live", "float16", 3)
    log.set_text(1, PLATE[:1])
    log.set_text(1, PLATE)  # a second read replaces the first
    log.add_label(2, PlaceLabel("Dock 7"))
    log.close()
    back = live_map.MapLog(tmp_path / "live", FP)
    assert back.keyframes[1].text == PLATE and back.keyframes[0].text is None
    assert [lb.label for lb in back.keyframes[2].labels] == ["Dock 7"]
    _, plain = load_keyframes(tmp_path / "live", MODEL)  # the map tools' reader of live maps
    assert plain[1].text == PLATE and plain[2].labels[0].label == "Dock 7"


def test_detector_keeps_text_and_labels_in_the_live_map_and_its_snapshot(tmp_path):
    det = _detector()
    det.attach_store(tmp_path / "live")
    for kf in synthetic_keyframes(4):
        det.process_descriptors(kf.stamp_ns, kf.global_, kf.local, kf.pose)
    det.set_text(3, PLATE)
    det.add_label(0, PlaceLabel("Room 214"))
    with pytest.raises(MapStoreError, match="non-empty"):
        det.add_label(1, PlaceLabel("  "))
    with pytest.raises(MapStoreError, match="source"):
        det.add_label(1, PlaceLabel("Room 9", source="x" * 100_000))
    assert det.keyframes[1].labels == ()  # a refused label changes nothing
    det.save_map(tmp_path / "snap")
    det.detach_store()
    for path in ("live", "snap"):
        _, back = load_keyframes(tmp_path / path, MODEL)
        assert back[3].text == PLATE and [lb.label for lb in back[0].labels] == ["Room 214"], path
    fresh = _detector()
    assert fresh.load_map(tmp_path / "snap") == 4
    assert fresh.keyframes[3].text == PLATE and fresh.keyframes[0].labels[0].label == "Room 214"


def test_in_memory_detector_saves_text_with_the_snapshot(tmp_path):
    det = _detector()
    for kf in synthetic_keyframes(2):
        det.process_descriptors(kf.stamp_ns, kf.global_, kf.local, kf.pose)
    det.set_text(0, PLATE)
    det.add_label(1, PlaceLabel("Aisle 12", "ocr-node", 7))
    det.save_map(tmp_path / "m")
    _, back = load_keyframes(tmp_path / "m", MODEL)
    assert back[0].text == PLATE and back[1].labels == (PlaceLabel("Aisle 12", "ocr-node", 7),)


def test_damaged_text_row_costs_only_that_keyframes_text(tmp_path, caplog):
    log, _ = _log(tmp_path / "live", "float16", 2)
    log.set_text(0, PLATE)
    log.set_text(1, PLATE)
    log.close()
    db = sqlite3.connect(tmp_path / "live" / live_map.LOG)
    with db:
        db.execute(f"UPDATE {text_table.TEXT_TABLE} SET readings = '[{{\"text\": 5' WHERE key = 0")
    db.close()
    back = live_map.MapLog(tmp_path / "live", FP)
    assert back.keyframes[0].text is None and back.keyframes[1].text == PLATE
    assert "damaged text/label rows were skipped" in caplog.text


def test_a_keyframe_whose_record_is_cut_keeps_its_text_labels_and_row(tmp_path):
    """A cut record is damage (records reach the disk before rows): the map is refused as it is, and its
    rows, text, labels and thumbnails are never deleted (they were, before: the 'torn tail' was dropped)."""
    log, _ = _log(tmp_path / "live", "float16", 2)
    third = synthetic_keyframes(3, seed=2)[2]
    third.thumbnail = b"\xff\xd8old"
    log.append(third)
    log.set_text(2, PLATE)
    log.add_label(2, PlaceLabel("Room 214"))
    log.close()
    seg = tmp_path / "live" / "local" / "00000.seg"
    os.truncate(seg, seg.stat().st_size - HEADER)
    with pytest.raises(MapStoreError, match="lacks the record of keyframe key 2"):
        live_map.MapLog(tmp_path / "live", FP, writable=True)
    db = sqlite3.connect(tmp_path / "live" / "log.sqlite")
    assert db.execute("SELECT count(*) FROM keyframes").fetchone()[0] == 3
    assert db.execute("SELECT count(*) FROM place_labels WHERE key = 2").fetchone()[0] == 1
    assert db.execute("SELECT count(*) FROM place_text WHERE key = 2").fetchone()[0] == 1
