"""The embedded Corridor dataset (VPR-Bench, two traversals of one corridor): where it lies and its
frames, for the demo, the benchmarks and the tests."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from vpr_ros.core.errors import InputError

__all__ = ["corridor_dir", "corridor_frames"]


def corridor_dir() -> Path:
    """The embedded Corridor dataset (query/, ref/, ground_truth_new.npy)."""
    return Path(str(resources.files("vpr_ros") / "data" / "corridor"))


def corridor_frames(split: str, count: int | None = None) -> list[npt.NDArray[np.uint8]]:
    """(120, 160, 3) uint8 RGB frames of traversal ``split`` ("ref" or "query"), in order."""
    files = sorted((corridor_dir() / split).glob("*.jpg"))[:count]
    if not files:
        raise InputError(f"no Corridor frames in {corridor_dir() / split}; reinstall vpr_ros")
    frames = []
    for f in files:
        bgr = cv2.imread(str(f), cv2.IMREAD_COLOR)
        if bgr is None:
            raise InputError(f"cannot read {f}; reinstall vpr_ros")
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    return frames
