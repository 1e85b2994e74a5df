"""Keyframe selection and temporal rules (exclusion of recent keyframes, k-consecutive consistency)."""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np
import numpy.typing as npt

from vpr_ros.core.config import DetectorConfig, KeyframeConfig, VerifyConfig
from vpr_ros.core.types import Keyframe

__all__ = ["KeyframeSelector", "is_excluded", "ConsistencyFilter", "rotation_angle", "find_key"]

NS = 1_000_000_000


def rotation_angle(r: npt.NDArray[np.float64]) -> float:
    """Angle in radians of the (3, 3) rotation ``r`` (from its trace, clipped against rounding)."""
    cos = (np.trace(r) - 1.0) / 2.0
    return math.acos(max(-1.0, min(1.0, cos)))


def _relative(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """a^-1 @ b for rigid (4, 4) poses, by the rigid inverse: np.linalg.inv raised LinAlgError on
    every later frame once a finite but singular pose (a damaged pose blob, an all-zero matrix from
    a replayed bag) became the last keyframe's."""
    r, t = a[:3, :3], a[:3, 3]
    inv = np.eye(4)
    inv[:3, :3] = r.T
    inv[:3, 3] = -r.T @ t
    return inv @ b


class KeyframeSelector:
    """Decides whether a frame becomes a keyframe.

    All enabled gates must pass: time gap; travel (translation OR rotation, only when both poses
    exist); novelty (global similarity to the last keyframe at most ``max_similarity``).
    """

    def __init__(self, config: KeyframeConfig | None = None) -> None:
        self.config = config or KeyframeConfig()
        self._last: Keyframe | None = None

    def reset(self) -> None:
        self._last = None

    def accept(self, keyframe: Keyframe) -> None:
        """Record ``keyframe`` as the last one selected."""
        self._last = keyframe

    def check(self, stamp_ns: int, global_: npt.NDArray[np.float32],
              pose: npt.NDArray[np.float64] | None) -> str | None:
        """Reason the frame is NOT a keyframe ("min_gap", "travel", "novelty"), or None to accept."""
        cfg, last = self.config, self._last
        if last is None:
            return None
        if (stamp_ns - last.stamp_ns) < cfg.min_gap_sec * NS:
            return "min_gap"
        travel_gates = cfg.min_translation_m > 0 or cfg.min_rotation_deg > 0
        if travel_gates and pose is not None and last.pose is not None:
            rel = _relative(last.pose, pose)
            moved = cfg.min_translation_m > 0 and np.linalg.norm(rel[:3, 3]) >= cfg.min_translation_m
            turned = cfg.min_rotation_deg > 0 and math.degrees(rotation_angle(rel[:3, :3])) >= cfg.min_rotation_deg
            if not (moved or turned):
                return "travel"
        if cfg.max_similarity < 1.0 and float(np.dot(global_, last.global_)) > cfg.max_similarity:
            return "novelty"
        return None


def is_excluded(query: Keyframe, other: Keyframe, config: DetectorConfig) -> bool:
    """True when ``other`` is too recent in the query's own stream to count as a loop.

    Keyframes of another robot or session are never excluded. Within the same stream a keyframe is
    excluded when it is newer than ``min_loop_gap_sec`` before the query, or among the last
    ``exclude_last_n`` keyframes, or is the query itself.
    """
    if other.robot_id != query.robot_id or other.session_id != query.session_id:
        return False
    if query.stamp_ns - other.stamp_ns < round(config.min_loop_gap_sec * NS):
        return True
    return query.id - other.id <= config.exclude_last_n


@dataclasses.dataclass
class _Match:
    query_id: int
    stream: tuple[str, str]
    match_id: int


class ConsistencyFilter:
    """k-consecutive temporal consistency: publish only after ``temporal_consistency`` consecutive
    query keyframes matched keyframes of the same stream whose ids lie within ``consistency_window``
    of the previous match."""

    def __init__(self, config: VerifyConfig | None = None) -> None:
        self.config = config or VerifyConfig()
        self._prev: _Match | None = None
        self._streak = 0

    def reset(self) -> None:
        self._prev, self._streak = None, 0

    def update(self, query_id: int, match: Keyframe | None) -> int:
        """Feed the best accepted match of keyframe ``query_id`` (None when there was none).

        Returns the current streak length (0 when no match); publish when it reaches
        ``temporal_consistency``.
        """
        if match is None:
            self._prev, self._streak = None, 0
            return 0
        cur = _Match(query_id, (match.robot_id, match.session_id), match.id)
        prev = self._prev
        agrees = (prev is not None and prev.query_id == query_id - 1 and prev.stream == cur.stream
                  and abs(prev.match_id - cur.match_id) <= self.config.consistency_window)
        self._streak = self._streak + 1 if agrees else 1
        self._prev = cur
        return self._streak


def find_key(keyframes: Sequence[Keyframe], robot_id: str, session_id: str, keyframe_id: int) -> int | None:
    """Map key (list position) of keyframe ``keyframe_id`` of (robot_id, session_id), or None.

    Newest first: the keyframe just made, or a recent place being labelled, is found at once.
    """
    for key in range(len(keyframes) - 1, -1, -1):
        kf = keyframes[key]
        if kf.id == keyframe_id and kf.robot_id == robot_id and kf.session_id == session_id:
            return key
    return None
