"""Small JPEG thumbnails of keyframes, for people looking at a map (``vpr-ros map report``).

Table ``thumbnails`` of ``map.sqlite`` (so the manifest's checksum of ``map.sqlite`` covers it)::

    key    keyframes.key of the keyframe
    jpeg   the JPEG bytes (longest side ``map.thumbnail_px`` pixels)

Keyframes without a thumbnail (``map.thumbnails`` false, descriptors given without an image) have no
row; maps saved before the table existed have no table. Nothing reads the thumbnails to detect
loops, so a damaged JPEG only spoils a picture (the report shows a placeholder).
"""

from __future__ import annotations

import sqlite3
from typing import Sequence

import cv2
import numpy as np
import numpy.typing as npt

from vpr_ros.core.types import Keyframe

__all__ = ["TABLE", "encode_thumbnail", "write_table", "read_table", "ensure_table", "append_row"]

TABLE = "thumbnails"
#: JPEG quality: at 160 px a thumbnail is ~5 kB, under 1 % of a lite0-gem keyframe.
QUALITY = 80


def encode_thumbnail(image: npt.NDArray[np.uint8], max_px: int) -> bytes:
    """(H, W, 3) uint8 RGB -> JPEG bytes whose longest side is at most ``max_px`` pixels."""
    h, w = image.shape[:2]
    scale = min(1.0, max_px / max(h, w))
    if scale < 1.0:
        image = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))),
                           interpolation=cv2.INTER_AREA)
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, QUALITY])
    if not ok:  # only for images OpenCV cannot encode at all; the keyframe is still useful without
        return b""
    return buf.tobytes()


def write_table(db: sqlite3.Connection, keyframes: Sequence[Keyframe]) -> int:
    """Create the table and insert every keyframe's thumbnail (key = list position); returns the count."""
    db.execute(f"CREATE TABLE {TABLE} (key INTEGER PRIMARY KEY, jpeg BLOB NOT NULL)")
    rows = [(key, bytes(kf.thumbnail)) for key, kf in enumerate(keyframes) if kf.thumbnail]
    db.executemany(f"INSERT INTO {TABLE} VALUES (?, ?)", rows)
    return len(rows)


def read_table(db: sqlite3.Connection, count: int) -> dict[int, bytes]:
    """key -> JPEG bytes; empty for maps without the table. Rows with a bad key or type are skipped."""
    if not db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (TABLE,)).fetchone():
        return {}
    return {key: jpeg for key, jpeg in db.execute(f"SELECT key, jpeg FROM {TABLE}")
            if isinstance(key, int) and 0 <= key < count and isinstance(jpeg, bytes) and jpeg}


def ensure_table(db: sqlite3.Connection) -> None:
    """The table, created if missing (live maps: core/map/live_map.py; older live maps have none)."""
    db.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (key INTEGER PRIMARY KEY, jpeg BLOB NOT NULL)")


def append_row(db: sqlite3.Connection, key: int, kf: Keyframe) -> None:
    """Insert keyframe ``key``'s thumbnail, if it has one (inside the caller's transaction)."""
    if kf.thumbnail:
        db.execute(f"INSERT INTO {TABLE} VALUES (?, ?)", (int(key), bytes(kf.thumbnail)))
