"""Text read on keyframes (OCR) and place labels, stored with the map (core/text/place_text.py).

Two tables of ``map.sqlite`` (snapshot maps, covered by the manifest's checksum) and of the live
map's ``log.sqlite`` (core/map/live_map.py), keyed like the other per-keyframe tables by ``keyframes.key``::

    place_text    key, readings (JSON list of {text, confidence, box}; "[]" = read, nothing found)
    place_labels  seq, key, label, source, stamp_ns   (several labels per keyframe, in given order)

A keyframe with no ``place_text`` row has not been read (``Keyframe.text`` None). Text arrives after
the keyframe (OCR runs off the hot path), so live maps update it in place (:func:`put_text`) and add
labels whenever they are given (:func:`put_label`). Maps saved before the tables existed have none.
A damaged row costs only that keyframe's text or label (logged), never the map: nothing in loop
detection depends on it.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Sequence

from vpr_ros.core.errors import MapStoreError
from vpr_ros.core.text.place_text import (MAX_LABEL_CHARS, PlaceLabel, TextReading, readings_from_json,
                                          readings_to_json)
from vpr_ros.core.types import Keyframe

__all__ = ["TEXT_TABLE", "LABEL_TABLE", "ensure_tables", "write_tables", "read_tables", "attach",
           "put_text", "put_label", "append_rows", "delete_from", "check_label"]

logger = logging.getLogger(__name__)

TEXT_TABLE = "place_text"
LABEL_TABLE = "place_labels"


def ensure_tables(db: sqlite3.Connection) -> None:
    db.execute(f"CREATE TABLE IF NOT EXISTS {TEXT_TABLE} (key INTEGER PRIMARY KEY, readings TEXT NOT NULL)")
    db.execute(f"CREATE TABLE IF NOT EXISTS {LABEL_TABLE} (seq INTEGER PRIMARY KEY, key INTEGER NOT NULL, "
               "label TEXT NOT NULL, source TEXT NOT NULL, stamp_ns INTEGER NOT NULL)")


def check_label(label: PlaceLabel) -> None:
    """Raises MapStoreError for a label that cannot be stored (empty, too long, not text)."""
    if not isinstance(label.label, str) or not label.label.strip():
        raise MapStoreError("a place label must be non-empty text; give the name or address of the place")
    if len(label.label) > MAX_LABEL_CHARS:
        raise MapStoreError(f"a place label has {len(label.label)} characters; keep it to {MAX_LABEL_CHARS}")
    if not isinstance(label.source, str) or len(label.source) > MAX_LABEL_CHARS:
        raise MapStoreError(f"a place label's source must be text of at most {MAX_LABEL_CHARS} characters "
                            "(who gave the label, e.g. 'user' or a node name)")


def put_text(db: sqlite3.Connection, key: int, readings: Sequence[TextReading]) -> None:
    """Store (replace) keyframe ``key``'s readings, inside the caller's transaction."""
    db.execute(f"INSERT OR REPLACE INTO {TEXT_TABLE} VALUES (?, ?)", (int(key), readings_to_json(readings)))


def put_label(db: sqlite3.Connection, key: int, label: PlaceLabel) -> None:
    """Add ``label`` to keyframe ``key``, inside the caller's transaction."""
    check_label(label)
    seq = db.execute(f"SELECT COALESCE(MAX(seq) + 1, 0) FROM {LABEL_TABLE}").fetchone()[0]
    db.execute(f"INSERT INTO {LABEL_TABLE} VALUES (?, ?, ?, ?, ?)",
               (seq, int(key), label.label, str(label.source), int(label.stamp_ns)))


def delete_from(db: sqlite3.Connection, key: int) -> None:
    """Forget text and labels of keys >= ``key`` (keyframes cut off a live map's torn tail)."""
    db.execute(f"DELETE FROM {TEXT_TABLE} WHERE key >= ?", (int(key),))
    db.execute(f"DELETE FROM {LABEL_TABLE} WHERE key >= ?", (int(key),))


def append_rows(db: sqlite3.Connection, key: int, kf: Keyframe) -> None:
    """A new keyframe's text and labels (a keyframe loaded from another map may carry them)."""
    if kf.text is not None:
        put_text(db, key, kf.text)
    for label in kf.labels:
        put_label(db, key, label)


def write_tables(db: sqlite3.Connection, keyframes: Sequence[Keyframe]) -> None:
    """Create the tables and store every keyframe's text and labels (key = list position)."""
    ensure_tables(db)
    for key, kf in enumerate(keyframes):
        append_rows(db, key, kf)


def _has(db: sqlite3.Connection, table: str) -> bool:
    return db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (table,)).fetchone() is not None


def read_tables(db: sqlite3.Connection, count: int, where: Path
                ) -> tuple[dict[int, tuple[TextReading, ...]], dict[int, list[PlaceLabel]]]:
    """key -> readings and key -> labels for keys < ``count``; damaged rows are logged and skipped."""
    texts: dict[int, tuple[TextReading, ...]] = {}
    labels: dict[int, list[PlaceLabel]] = {}
    skipped = 0
    if _has(db, TEXT_TABLE):
        for key, doc in db.execute(f"SELECT key, readings FROM {TEXT_TABLE}"):
            if not (isinstance(key, int) and 0 <= key < count and isinstance(doc, str)):
                skipped += 1
                continue
            try:
                texts[key] = readings_from_json(doc, f"map {where} keyframe key {key}")
            except MapStoreError as exc:
                logger.warning("%s", exc)
                skipped += 1
    if _has(db, LABEL_TABLE):
        for key, label, source, stamp in db.execute(
                f"SELECT key, label, source, stamp_ns FROM {LABEL_TABLE} ORDER BY seq"):
            if not (isinstance(key, int) and 0 <= key < count and isinstance(label, str) and label
                    and isinstance(source, str) and isinstance(stamp, int)):
                skipped += 1
                continue
            labels.setdefault(key, []).append(PlaceLabel(label, source, stamp))
    if skipped:
        logger.warning("map %s: %d damaged text/label rows were skipped (their text or labels are lost; the "
                       "keyframes are intact)", where, skipped)
    return texts, labels


def attach(keyframes: Sequence[Keyframe], texts: dict[int, tuple[TextReading, ...]],
           labels: dict[int, list[PlaceLabel]]) -> None:
    for key, readings in texts.items():
        if key < len(keyframes):
            keyframes[key].text = readings
    for key, items in labels.items():
        if key < len(keyframes):
            keyframes[key].labels = tuple(items)
