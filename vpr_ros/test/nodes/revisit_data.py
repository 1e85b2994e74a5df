"""Corridor revisit frames shared by the node tests and their scenarios."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

CORRIDOR = Path(__file__).resolve().parents[2] / "vpr_ros" / "data" / "corridor"


def corridor_revisit(n: int) -> list[tuple[int, np.ndarray]]:
    """Reference frames 0..n-1 at 0..n-1 s, then query frames of the same places at 100 s on."""
    frames = []
    for offset, folder in ((0, "ref"), (100, "query")):
        for i in range(n):
            bgr = cv2.imread(str(CORRIDOR / folder / f"{i:07d}.jpg"), cv2.IMREAD_COLOR)
            frames.append(((offset + i) * 1_000_000_000, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))
    return frames
