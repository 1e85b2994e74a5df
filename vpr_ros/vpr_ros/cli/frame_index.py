"""The frame index sidecar of a saved map (``vpr_frame_index.json``): which bag frame each keyframe came
from, for index ground truth. Written by ``vpr-ros replay --map-save`` and the demo next to the map; the
store does not own it, and map tools that rewrite a map carry it over (core/map/snapshot.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

from vpr_ros.core.errors import MapStoreError
from vpr_ros.core.eval.groundtruth import KeyframeRecord
from vpr_ros.core.map.atomic_dir import fsync_dir

__all__ = ["FRAME_INDEX_FILE", "Key", "save_frame_index", "load_frame_index"]

#: Sidecar written next to a saved map: which bag frame each keyframe came from (for index ground truth).
FRAME_INDEX_FILE = "vpr_frame_index.json"

Key = tuple[str, str, int]


def save_frame_index(map_dir: str | Path, records: Sequence[KeyframeRecord]) -> None:
    """Write the frame index of every keyframe into ``map_dir`` (next to the saved map).

    Written to a temporary file, fsynced and renamed, so a crash leaves the old or the new file.
    """
    rows = [[r.robot_id, r.session_id, r.keyframe_id, r.frame_index] for r in records]
    path = Path(map_dir) / FRAME_INDEX_FILE
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "w") as f:
            f.write(json.dumps({"keyframes": rows}))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise MapStoreError(f"cannot write {path}: {exc.strerror or exc}; the map was saved, but evaluation "
                            "against it will lack bag frame indices — check the disk has space") from None


def load_frame_index(map_dir: str | Path) -> dict[Key, int]:
    """Read the sidecar of :func:`save_frame_index`; empty when the map was saved by something else.
    MapStoreError naming the file when it is not a frame index (``map verify`` and ``--map-load`` alike)."""
    path = Path(map_dir) / FRAME_INDEX_FILE
    if not path.exists():
        return {}
    try:
        if path.is_symlink() or not path.is_file():
            raise ValueError("not a regular file")
        rows = json.loads(path.read_text())["keyframes"]
        return {(str(r), str(s), int(i)): int(f) for r, s, i, f in rows}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise MapStoreError(f"{path} is damaged or unreadable ({exc}); delete it or save the map again") from None
