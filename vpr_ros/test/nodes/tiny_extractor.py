"""A tiny deterministic descriptor extractor for node tests and benchmarks (no torch, no weights).

Global: the image as 32x24 grey pixels, zero-mean, L2-normalised (768-d) -- the low-resolution
"how low can you go" descriptor that works on the corridor data. Local: an 8x6 grid whose cells are
4x4 grey patches, zero-mean and L2-normalised (16-d). Both are pure functions of the pixels, so the
node and an offline run give bit-identical descriptors.

Loaded by the node through its hidden ``extractor_factory`` parameter ("tiny_extractor:build").
"""

from __future__ import annotations

import os
import time
from typing import Sequence

import cv2
import numpy as np
import numpy.typing as npt

from vpr_ros.core.config import Config
from vpr_ros.core.types import Descriptors

GRID = (12, 16)  # (h, w) of the local map
CELL = 6         # each local feature is a CELL x CELL grey patch


def _normalise(x: npt.NDArray[np.float32], axis: int = -1) -> npt.NDArray[np.float32]:
    x = x - x.mean(axis=axis, keepdims=True)
    return (x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), 1e-6)).astype(np.float32)


class TinyExtractor:
    """Deterministic pixel descriptors; ``delay_sec`` slows every extract (back-pressure tests)."""

    global_dim = 32 * 24

    def __init__(self, delay_sec: float = 0.0) -> None:
        self.delay_sec = delay_sec
        self.model_id = "tiny-pixels@test"

    def extract(self, images: Sequence[npt.NDArray[np.uint8]]) -> Descriptors:
        """(H, W, 3) uint8 RGB images -> global (N, 768), local (N, 6, 8, 16)."""
        if self.delay_sec:
            time.sleep(self.delay_sec)
        globals_, locals_ = [], []
        for image in images:
            grey = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY).astype(np.float32)
            globals_.append(_normalise(cv2.resize(grey, (32, 24), interpolation=cv2.INTER_AREA).reshape(-1)))
            h, w = GRID
            small = cv2.resize(grey, (w * CELL, h * CELL), interpolation=cv2.INTER_AREA)
            cells = small.reshape(h, CELL, w, CELL).transpose(0, 2, 1, 3).reshape(h, w, CELL * CELL)
            locals_.append(_normalise(cells))
        return Descriptors(global_=np.stack(globals_), local=np.stack(locals_))


def build(config: Config) -> TinyExtractor:
    """extractor_factory entry point; VPR_TEST_EXTRACT_DELAY_SEC slows the model (tests only)."""
    return TinyExtractor(float(os.environ.get("VPR_TEST_EXTRACT_DELAY_SEC", "0")))


def build_slow(config: Config) -> TinyExtractor:
    """A model slower than a 30 Hz camera (0.2 s per image), for the back-pressure test."""
    return TinyExtractor(0.2)


def build_other(config: Config) -> TinyExtractor:
    """The same pixels under another model id: a robot running a different model (fleet tests)."""
    extractor = TinyExtractor()
    extractor.model_id = "tiny-pixels@other"
    return extractor
