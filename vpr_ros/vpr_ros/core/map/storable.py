"""What a snapshot save writes besides the map itself, and what it leaves out.

* ``only_storable``: keyframes and loops whose ids and stamps SQLite can hold (signed 64-bit); a peer's
  keyframe beyond that range is left out with a warning and never blocks saving the own keyframes;
* ``copy_sidecars``: files of a map the store does not own (the replay's frame index), carried into the
  map a tool rewrites (``map label``, ``map compact``).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from vpr_ros.core.index import KeyframeIndex
from vpr_ros.core.map.atomic_dir import fsync_file
from vpr_ros.core.types import Keyframe, LoopClosure

__all__ = ["only_storable", "copy_sidecars"]

logger = logging.getLogger("vpr_ros.core.map.snapshot")

_INT64 = (-(1 << 63), (1 << 63) - 1)


def _storable(*values: int) -> bool:
    return all(_INT64[0] <= int(v) <= _INT64[1] for v in values)


def only_storable(keyframes: Sequence[Keyframe], loops: Sequence[LoopClosure],
                   index_writer: Callable[[Path], None] | None,
                   global_dim: int) -> tuple[Sequence[Keyframe], Sequence[LoopClosure], Callable[[Path], None] | None]:
    """Keyframes and loops whose ids and stamps SQLite can hold (signed 64-bit). Another robot's keyframe
    beyond that range never blocks saving the own ones: it is left out, with a warning; so is one known by
    its hash only (no float descriptor to store)."""
    hash_only = sum(np.size(kf.global_) == 0 for kf in keyframes)
    if hash_only:  # other robots' keyframes received as hashes only (core/hash_index.py): no float to store
        logger.warning("saving without %d keyframes of other robots known by their hash only (their owners keep "
                       "them)", hash_only)
    kept = [kf for kf in keyframes if _storable(kf.id, kf.stamp_ns) and np.size(kf.global_)]
    if len(kept) == len(keyframes):
        return keyframes, loops, index_writer
    if len(keyframes) - len(kept) > hash_only:
        logger.warning("saving without %d keyframes whose id or stamp does not fit a signed 64-bit integer (sent "
                       "by another robot?)", len(keyframes) - len(kept) - hash_only)
    loops = [lp for lp in loops if _storable(lp.query_id, lp.match_id, lp.query_stamp_ns, lp.match_stamp_ns)]
    index = KeyframeIndex(global_dim)  # keys are list positions, which changed
    if kept:
        index.add(np.arange(len(kept)), np.stack([k.global_ for k in kept]))
    return kept, loops, index.save


def copy_sidecars(source: Path | None, names: Iterable[str], root: Path) -> None:
    """Copy the regular files ``names`` of the map ``source`` (files the store does not own) into ``root``."""
    for name in sorted(names) if source is not None else ():
        if (source / name).is_file() and not (source / name).is_symlink() and not name.endswith(".tmp"):
            shutil.copyfile(source / name, root / name)
            fsync_file(root / name)
