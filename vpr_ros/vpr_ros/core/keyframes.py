"""Keyframe selection and temporal rules (exclusion of recent keyframes, k-consecutive consistency by place)."""

from __future__ import annotations

import dataclasses
import math
from typing import Iterable, Sequence

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


@dataclasses.dataclass(frozen=True)
class _Place:
    """A keyframe as the consistency rule sees it: its stream, id and position (None without a pose)."""

    stream: tuple[str, str]
    id: int
    position: npt.NDArray[np.float64] | None

    @property
    def ident(self) -> tuple[str, str, int]:
        return (*self.stream, self.id)

    @classmethod
    def of(cls, kf: Keyframe) -> _Place:
        return cls((kf.robot_id, kf.session_id), kf.id, None if kf.pose is None else kf.pose[:3, 3].copy())


#: How far the same-place links are followed (lap 3 -> lap 2 -> lap 1), and how many keyframes one
#: place may gather (bounds the cost, and what one wrong loop can make consistent).
_LINK_HOPS, _MAX_PLACE = 2, 64


class ConsistencyFilter:
    """k-consecutive temporal consistency: publish only after ``temporal_consistency`` consecutive
    query keyframes matched agreeing keyframes.

    ``consistency_by_place`` false (the old rule): two successive matches agree when they are keyframes
    of the same stream (robot, session) whose ids differ by at most ``consistency_window``. True (the
    default): they agree when they are the same place, seen in any earlier lap or session: each match
    stands for itself and for the keyframes it was verified as the same place as (both ends of every
    published loop, and of the loops stored in a loaded map (:meth:`link`), followed over two links:
    lap 3 -> lap 2 -> lap 1), and two matches agree when
    any keyframe of the one and any of the other lie in one stream with ids within the window, or with
    both poses within ``consistency_radius_m`` (odometry of one stream shares one frame). So a third
    lap whose best matches alternate between laps 1 and 2 of one place stays consistent.
    """

    def __init__(self, config: VerifyConfig | None = None) -> None:
        self.config = config or VerifyConfig()
        self._links: dict[tuple[str, str, int], set[tuple[str, str, int]]] = {}
        self._places: dict[tuple[str, str, int], _Place] = {}
        self.reset()

    def reset(self, keep_places: bool = False) -> None:
        """Forget the current streak; and the same-place links too unless ``keep_places`` (a new session
        of the same map keeps them: its keyframes stay)."""
        self._prev: tuple[int, _Place] | None = None
        self._streak = 0
        self._pending: list[tuple[_Place, _Place]] = []
        if not keep_places:
            self._links.clear()
            self._places.clear()

    def update(self, query: Keyframe | int, match: Keyframe | None) -> int:
        """Feed the best accepted match of keyframe ``query`` (its id is enough for the old rule) or
        None when there was none.

        Returns the current streak length (0 when no match); publish when it reaches
        ``temporal_consistency``, then call :meth:`confirm` when the loop is published.
        """
        query_id = query if isinstance(query, int) else query.id
        if match is None:
            self._prev, self._streak, self._pending = None, 0, []
            return 0
        cur = _Place.of(match)
        prev = self._prev
        agrees = prev is not None and prev[0] == query_id - 1 and self._agree(prev[1], cur)
        self._streak = self._streak + 1 if agrees else 1
        if not agrees:
            self._pending = []
        if not isinstance(query, int):
            keep = self.config.temporal_consistency - 1  # the streak a published loop confirms
            self._pending = [*(self._pending[-keep:] if keep else []), (_Place.of(query), cur)]
        self._prev = (query_id, cur)
        return self._streak

    def confirm(self) -> None:
        """The last update's match was published as a loop: it and the earlier matches of its streak
        become same-place links (only with ``consistency_by_place``)."""
        if not self.config.consistency_by_place:
            return
        for query, match in self._pending:
            self._link(query, match)
        self._pending = []

    def link(self, pairs: Iterable[tuple[Keyframe, Keyframe]]) -> int:
        """(query, match) keyframes of loops published before (a loaded map's stored loops) become
        same-place links, as :meth:`confirm` makes them live (only with ``consistency_by_place``);
        returns how many pairs were linked."""
        if not self.config.consistency_by_place:
            return 0
        count = 0
        for query, match in pairs:
            self._link(_Place.of(query), _Place.of(match))
            count += 1
        return count

    def _link(self, query: _Place, match: _Place) -> None:
        for a, b in ((query, match), (match, query)):
            self._places.setdefault(a.ident, a)
            self._links.setdefault(a.ident, set()).add(b.ident)

    def same_place(self, place: _Place) -> list[_Place]:
        """``place`` and the keyframes linked to it as the same place (at most ``_MAX_PLACE``)."""
        seen = {place.ident: place}
        frontier = [place.ident]
        for _ in range(_LINK_HOPS):
            nxt = []
            for ident in frontier:
                for other in sorted(self._links.get(ident, ())):
                    if other not in seen and len(seen) < _MAX_PLACE:
                        seen[other] = self._places[other]
                        nxt.append(other)
            frontier = nxt
        return list(seen.values())

    def _near(self, a: _Place, b: _Place) -> bool:
        if a.stream != b.stream:
            return False
        if abs(a.id - b.id) <= self.config.consistency_window:
            return True
        radius = self.config.consistency_radius_m
        return (self.config.consistency_by_place and radius > 0 and a.position is not None
                and b.position is not None and float(np.linalg.norm(a.position - b.position)) <= radius)

    def _agree(self, prev: _Place, cur: _Place) -> bool:
        if self._near(prev, cur):
            return True
        if not self.config.consistency_by_place:
            return False
        here = self.same_place(cur)
        return any(self._near(p, c) for p in self.same_place(prev) for c in here)


def find_key(keyframes: Sequence[Keyframe], robot_id: str, session_id: str, keyframe_id: int) -> int | None:
    """Map key (list position) of keyframe ``keyframe_id`` of (robot_id, session_id), or None.

    Newest first: the keyframe just made, or a recent place being labelled, is found at once.
    """
    for key in range(len(keyframes) - 1, -1, -1):
        kf = keyframes[key]
        if kf.id == keyframe_id and kf.robot_id == robot_id and kf.session_id == session_id:
            return key
    return None
