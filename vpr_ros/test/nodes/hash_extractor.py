"""TinyExtractor with a 512-bit hash, like a SelaVPR++ ``-rerank`` model (tests only, no torch).

The hash is the sign of a fixed random projection of the float descriptor (bit = 1 where >= 0, packed
MSB first with ``np.packbits``), so Hamming neighbours are float neighbours up to projection noise.
``extractor_factory`` entry point: ``hash_extractor:build``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import numpy.typing as npt

from vpr_ros.core.config import Config
from vpr_ros.core.types import Descriptors

from tiny_extractor import TinyExtractor

BITS = 512


class HashingTinyExtractor(TinyExtractor):
    """TinyExtractor plus ``hash_bits`` and ``Descriptors.hash`` (N, 64) uint8."""

    hash_bits = BITS

    def __init__(self, delay_sec: float = 0.0) -> None:
        super().__init__(delay_sec)
        self.model_id = "tiny-pixels-hash@test"
        self._projection = np.random.default_rng(23).standard_normal((self.global_dim, BITS)).astype(np.float32)

    def extract(self, images: Sequence[npt.NDArray[np.uint8]]) -> Descriptors:
        desc = super().extract(images)
        return Descriptors(global_=desc.global_, local=desc.local,
                           hash=np.packbits(desc.global_ @ self._projection >= 0, axis=1))


def build(config: Config) -> HashingTinyExtractor:
    return HashingTinyExtractor()
