"""Shared fixtures: seeded data, a tiny deterministic extractor, the embedded corridor images."""

from __future__ import annotations

import os
from pathlib import Path

# Pin thread pools before numpy/torch/faiss start theirs: two spinning pools on 2 cores slow
# each other down several-fold (docs/benchmarks.md).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from vpr_ros.core.types import Descriptors  # noqa: E402

CORRIDOR = Path(__file__).resolve().parents[1] / "vpr_ros" / "data" / "corridor"


class TinyExtractor:
    """A real (if weak) descriptor: normalised 12x9 grey thumbnail globally, and an 8x8 grid of
    colour + gradient vectors as local features. Deterministic and fast, for pipeline tests."""

    model_id = "tiny@test"
    global_dim = 108

    def extract(self, images):
        g, loc = [], []
        for im in images:
            grey = cv2.cvtColor(im, cv2.COLOR_RGB2GRAY).astype(np.float32)
            thumb = cv2.resize(grey, (12, 9), interpolation=cv2.INTER_AREA).reshape(-1)
            thumb = thumb - thumb.mean()
            g.append(thumb / (np.linalg.norm(thumb) + 1e-6))
            small = cv2.resize(im, (8, 8), interpolation=cv2.INTER_AREA).astype(np.float32)
            gx = cv2.Sobel(cv2.resize(grey, (8, 8)), cv2.CV_32F, 1, 0)[..., None]
            gy = cv2.Sobel(cv2.resize(grey, (8, 8)), cv2.CV_32F, 0, 1)[..., None]
            f = np.concatenate([small - small.mean(), gx, gy], axis=2) + 1e-3
            loc.append(f / np.linalg.norm(f, axis=2, keepdims=True))
        return Descriptors(np.stack(g).astype(np.float32), np.stack(loc).astype(np.float32))


@pytest.fixture
def tiny_extractor() -> TinyExtractor:
    return TinyExtractor()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def corridor_image(split: str, index: int) -> np.ndarray:
    """RGB uint8 frame ``index`` of the embedded corridor ``split`` ("query" or "ref")."""
    bgr = cv2.imread(str(CORRIDOR / split / f"{index:07d}.jpg"))
    assert bgr is not None, f"missing corridor frame {split}/{index}"
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
