"""Candidate verification by mutual nearest neighbours (MNN) of dense local features.

The MNN count is SelaVPR's re-ranking score (its ``local_matching.match_batch_tensor``, eval branch):
similarity S = f1 . f0^T over all location pairs of two L2-normalised maps; location i of the query
and j of the candidate form a pair when each is the other's argmax (first index on ties). No
threshold, no ratio test. SelaVPR scores exactly one pair as 0 (a squeeze quirk); we keep that so
scores equal the official ones. An optional RANSAC epipolar check on the matched grid positions
counts geometric inliers.
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

from vpr_ros.core.config import VerifyConfig
from vpr_ros.core.errors import InputError
from vpr_ros.core.matching.mnn_batched import GemmFactory, mnn_pairs_many
from vpr_ros.core.types import Candidate, Verification

__all__ = ["mnn_pairs", "mnn_count", "fundamental_inliers", "Verifier"]

F32 = npt.NDArray[np.float32]


def _flat(local: F32, name: str) -> tuple[F32, int]:
    if local.ndim != 3:
        raise InputError(f"{name} local features must be (h, w, c), got shape {local.shape}")
    h, w, c = local.shape
    return np.ascontiguousarray(local.reshape(h * w, c), dtype=np.float32), w


def mnn_pairs(local0: F32, local1: F32) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Mutual nearest neighbours between two (h, w, c) L2-normalised maps.

    Returns flat location indices (M,) into map 0 and (M,) into map 1, ordered by map-0 index.
    """
    f0, _ = _flat(local0, "query")
    f1, _ = _flat(local1, "candidate")
    if f0.shape[1] != f1.shape[1]:
        raise InputError(f"local feature channels differ: {f0.shape[1]} vs {f1.shape[1]}")
    sim = f0 @ f1.T  # (N0, N1)
    best1 = np.argmax(sim, axis=1)  # for each query location, its best candidate location
    best0 = np.argmax(sim, axis=0)  # for each candidate location, its best query location
    idx0 = np.arange(f0.shape[0])
    mutual = best0[best1] == idx0
    return idx0[mutual], best1[mutual]


def mnn_count(local0: F32, local1: F32) -> int:
    """SelaVPR's score: number of MNN pairs, with its quirk that a single pair scores 0."""
    n = len(mnn_pairs(local0, local1)[0])
    return 0 if n == 1 else n


def fundamental_inliers(pts0: npt.NDArray[np.float64], pts1: npt.NDArray[np.float64],
                        threshold: float, seed: int = 0) -> int:
    """RANSAC fundamental-matrix inliers between (M, 2) point sets; 0 when M < 8."""
    if len(pts0) < 8:
        return 0
    cv2.setRNGSeed(seed)  # deterministic RANSAC: the same frames always give the same verdict
    _, mask = cv2.findFundamentalMat(pts0.astype(np.float64), pts1.astype(np.float64),
                                     cv2.FM_RANSAC, threshold, 0.999, 2000)
    return 0 if mask is None else int(mask.sum())


class Verifier:
    """Scores candidates of one query with the configured method and applies the accept rule."""

    def __init__(self, config: VerifyConfig | None = None, mnn_gemm: GemmFactory | None = None) -> None:
        self.config = config or VerifyConfig()
        # The screen GEMM of mnn_batched (e.g. models.backends.mnn_screen.torch_gemm("bf16")): it
        # changes the speed, never the counts. None: mnn_batched picks (numpy fp32).
        self.mnn_gemm = mnn_gemm

    def verify(self, local0: F32 | None, candidate: Candidate, local1: F32 | None,
               keep_matches: bool = False) -> Verification:
        return self.verify_many(local0, [candidate], [local1], keep_matches)[0]

    def verify_many(self, local0: F32 | None, candidates: list[Candidate], locals1: list[F32 | None],
                    keep_matches: bool = False) -> list[Verification]:
        """Verify K candidates of one query; their MNN matching runs as one blocked batch."""
        if len(candidates) != len(locals1):
            raise InputError(f"{len(candidates)} candidates but {len(locals1)} local feature maps")
        dense = [] if self.config.method == "global" or local0 is None else \
            [x for x in locals1 if x is not None]
        pairs = iter(mnn_pairs_many(local0, dense, self.mnn_gemm) if dense else [])
        return [self._verdict(local0, c, x, None if x is None or not dense else next(pairs), keep_matches)
                for c, x in zip(candidates, locals1)]

    def _verdict(self, local0: F32 | None, candidate: Candidate, local1: F32 | None,
                 pairs: tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]] | None,
                 keep_matches: bool) -> Verification:
        cfg = self.config
        method = cfg.method
        if method == "global" or local0 is None or local1 is None:
            if method != "global":
                raise InputError(
                    f"verify.method={method!r} needs dense local features, but the model gives none "
                    "or the map was saved without them; set verify.method to 'global' or "
                    "map.store_local to true")
            ok = candidate.similarity >= cfg.min_global_similarity
            return Verification(candidate, 0, 0, 0, float(candidate.similarity), ok, method)
        i0, i1 = pairs
        count = 0 if len(i0) == 1 else len(i0)
        h, w = local0.shape[:2]
        inliers = 0
        m0 = np.stack([i0 // w, i0 % w], axis=1).astype(np.int32)
        m1 = np.stack([i1 // local1.shape[1], i1 % local1.shape[1]], axis=1).astype(np.int32)
        if method == "mnn+fundamental":
            inliers = fundamental_inliers(m0[:, ::-1].astype(np.float64), m1[:, ::-1].astype(np.float64),
                                          cfg.ransac_threshold_px)
            score = float(inliers)
            ok = count >= cfg.min_matches and inliers >= cfg.min_inliers
        else:
            score = float(count)
            ok = count >= cfg.min_matches
        ok = ok and candidate.similarity >= cfg.min_global_similarity
        return Verification(candidate, count, h * w, inliers, score, ok, method,
                            m0 if keep_matches else None, m1 if keep_matches else None)
