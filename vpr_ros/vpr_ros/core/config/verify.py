"""Configuration of verification (``verify.*``): is a retrieval candidate the same place (MNN counts,
accept rule) and the temporal consistency of successive matches. Part of
:class:`vpr_ros.core.config.Config`."""

from __future__ import annotations

import dataclasses

from vpr_ros.core.config.checks import MAX_COUNT, MAX_METRES, MNN_SCREENS, VERIFY_METHODS
from vpr_ros.core.config.checks import check_fields as _check_fields, meta as _meta

__all__ = ["VerifyConfig"]


@dataclasses.dataclass(frozen=True)
class VerifyConfig:
    """Candidate verification by dense local features."""

    method: str = dataclasses.field(default="mnn", metadata=_meta(
        "Verification method.", choices=VERIFY_METHODS))
    mnn_screen: str = dataclasses.field(default="auto", metadata=_meta(
        "GEMM that screens the exact MNN count; the counts are identical for every choice (an error "
        "bound and an exact settle decide, core/matching/mnn_batched.py), only the speed differs. auto: bf16 "
        "(oneDNN) where the CPU has native bf16 (AVX512-BF16 or AMX), else fp32; maps whose whole "
        "similarity matrix fits one 2 MB block (lite0-gem's 20x20) always take the plain fp32 product.",
        choices=MNN_SCREENS))
    min_matches: int = dataclasses.field(default=120, metadata=_meta(
        "Accept a candidate when its mutual-nearest-neighbour count reaches this. The default suits "
        "lite0-gem's 20x20 map (400 locations: same place ~150-220, another environment ~70-100); "
        "scale it with the map size for other presets (SelaVPR: 61x61).", lo=0, hi=MAX_COUNT))
    min_global_similarity: float = dataclasses.field(default=0.0, metadata=_meta(
        "Candidates below this global cosine similarity are not verified.", lo=-1.0, hi=1.0))
    min_inliers: int = dataclasses.field(default=12, metadata=_meta(
        "RANSAC inliers needed by mnn+fundamental.", lo=0, hi=MAX_COUNT))
    ransac_threshold_px: float = dataclasses.field(default=2.0, metadata=_meta(
        "Epipolar RANSAC threshold in local-feature grid cells for mnn+fundamental.", lo=0.0,
        hi=MAX_METRES))
    temporal_consistency: int = dataclasses.field(default=2, metadata=_meta(
        "Consecutive query keyframes that must match nearby keyframes before a loop is published "
        "(1 disables the check).", lo=1, hi=100))
    consistency_window: int = dataclasses.field(default=2, metadata=_meta(
        "Two consecutive matches agree when their match keyframe ids differ by at most this.", lo=0,
        hi=MAX_COUNT))
    consistency_by_place: bool = dataclasses.field(default=True, metadata=_meta(
        "Matches also agree when they are one place of an earlier lap or session (keyframes linked by "
        "published loops, or poses within consistency_radius_m); false: the old rule, ids of one stream."))
    consistency_radius_m: float = dataclasses.field(default=2.0, metadata=_meta(
        "consistency_by_place: poses of one stream within this, metres, agree (0: off)", lo=0.0, hi=MAX_METRES))

    def __post_init__(self) -> None:
        _check_fields(self, "verify")
