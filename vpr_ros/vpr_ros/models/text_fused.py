"""A text-aware global descriptor (issue 13, optional; ``text.fused_weight`` > 0): the image
descriptor concatenated with a weighted sentence embedding of the text read on the image.

For an image with distinctive text (the codes and words of the text rule, core/text/rule.py: readings
at or above ``text.min_confidence``, room numbers and rare words, sorted and joined by spaces) the
global descriptor is ``[g, w * e] / sqrt(1 + w^2)``, else ``[g, 0]``;
g: the model's (D,) L2-normalised descriptor, e: the (384,) all-MiniLM-L6-v2 embedding
(models/text_embedding.py), w: ``text.fused_weight``. Both rows are unit length, so inner product
stays cosine: two images with text score ``(cos_g + w^2 cos_e) / (1 + w^2)``, an image with text
against one without ``cos_g / sqrt(1 + w^2)``. This is the multi-modal VPR idea (fuse image and text
because text survives appearance change) in a form that runs on a CPU: it changes retrieval, not
verification (local features pass through untouched), unlike the text rule (core/text/rule.py).

The wrapper is also the detector's ``text_reader``: it returns the readings of an image it has just
extracted, so each keyframe is read once. It reads every frame it extracts (not only keyframes):
the OCR cost moves from keyframes to frames. Its model id names the fusion and the weight, so its maps
never mix with plain ones.
"""

from __future__ import annotations

import collections
import threading
from typing import Any, Sequence

import numpy as np
import numpy.typing as npt

from vpr_ros.core.text.place_text import TextReading
from vpr_ros.core.text.rule import distinctive_text
from vpr_ros.core.types import Descriptors

__all__ = ["TextFusedExtractor", "fused_text"]

_RECENT = 8  # images whose readings are kept for read(): the pipeline extracts one frame ahead


def fused_text(readings: Sequence[TextReading], min_confidence: float) -> str:
    """The string embedded for an image: its distinctive codes and words, sorted (reading order varies).
    Junk OCR finds in texture ("1", "EA") is not distinctive, so such images keep the image descriptor."""
    text = distinctive_text(readings, min_confidence)
    return " ".join(sorted(text.codes | text.words))


class TextFusedExtractor:
    """Wraps an extractor; ``reader``: an OCR reader (``read(image)``); ``embedder``: ``embed(texts)``
    -> (N, dim) L2-normalised float32 with attribute ``dim`` or the module's EMBED_DIM."""

    def __init__(self, model: Any, reader: Any, embedder: Any, weight: float, min_confidence: float,
                 embed_dim: int = 384) -> None:
        self.model = model
        self.reader = reader
        self.embedder = embedder
        self.weight = float(weight)
        self.min_confidence = float(min_confidence)
        self.embed_dim = int(embed_dim)
        self.global_dim = int(model.global_dim) + self.embed_dim
        name, at, digest = str(model.model_id).partition("@")
        self.model_id = f"{name}+minilm-text-w{self.weight:g}{at}{digest}"
        self._recent: collections.OrderedDict[int, tuple[npt.NDArray[np.uint8], tuple[TextReading, ...]]] = \
            collections.OrderedDict()
        self._lock = threading.Lock()  # extract runs on the pipeline's worker, read on the detector's thread

    def __getattr__(self, name: str) -> Any:
        # spec, keep_aspect, threads ...: the preprocessing of the wrapped model (geometry, map fingerprint)
        model = self.__dict__.get("model")
        if model is None:
            raise AttributeError(name)
        return getattr(model, name)

    def read(self, image: npt.NDArray[np.uint8]) -> tuple[TextReading, ...]:
        """The readings of ``image``: remembered from :meth:`extract`, else read now."""
        with self._lock:
            hit = self._recent.get(id(image))
        if hit is not None and hit[0] is image:
            return hit[1]
        return tuple(self.reader.read(image))

    def extract(self, images: Sequence[npt.NDArray[np.uint8]]) -> Descriptors:
        """(H, W, 3) uint8 RGB images -> Descriptors with (N, D + 384) fused global rows."""
        desc = self.model.extract(images)
        readings = [tuple(self.reader.read(im)) for im in images]
        with self._lock:
            for im, r in zip(images, readings):
                self._recent[id(im)] = (im, r)  # the reference keeps id(im) from being reused
                while len(self._recent) > _RECENT:
                    self._recent.popitem(last=False)
        texts = [fused_text(r, self.min_confidence) for r in readings]
        text_rows = np.zeros((len(images), self.embed_dim), np.float32)
        has = [i for i, t in enumerate(texts) if t]
        if has:
            text_rows[has] = self.embedder.embed([texts[i] for i in has])
        scale = np.where([bool(t) for t in texts], 1.0 / np.sqrt(1.0 + self.weight ** 2), 1.0)[:, None]
        fused = np.concatenate([desc.global_, self.weight * text_rows], axis=1) * scale
        return Descriptors(fused.astype(np.float32), desc.local)
