"""Ground truth for loop closures: from poses (distance) or from a VPR-Bench ``ground_truth_new.npy``.

Evaluation works on :class:`KeyframeRecord` (who, when, which frame of its bag, where). A ground
truth answers two questions: is this (query, match) pair a true loop, and does a query have any
true loop among the keyframes it could have matched (the recall denominator)? Pairs inside the
detector's temporal exclusion window are never true loops: the detector is not allowed to report them.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Collection, Mapping, Protocol, Sequence

import numpy as np
import numpy.typing as npt

from vpr_ros.core.errors import InputError

__all__ = ["KeyframeRecord", "Exclusion", "GroundTruth", "PoseGroundTruth", "IndexGroundTruth",
           "load_vprbench_gt"]

NS = 1_000_000_000


@dataclasses.dataclass(frozen=True)
class KeyframeRecord:
    """One keyframe as evaluation sees it.

    frame_index: 0-based position of the keyframe's image in its own bag / traversal (-1 unknown).
    position: (3,) float64 world position of the body, or None without odometry.
    """

    robot_id: str
    session_id: str
    keyframe_id: int
    stamp_ns: int
    frame_index: int = -1
    position: npt.NDArray[np.float64] | None = None

    @property
    def key(self) -> tuple[str, str, int]:
        """(robot_id, session_id, keyframe_id): unique across a map of many sessions."""
        return (self.robot_id, self.session_id, self.keyframe_id)


@dataclasses.dataclass(frozen=True)
class Exclusion:
    """The detector's temporal exclusion rule (``detector.min_loop_gap_sec`` / ``exclude_last_n``)."""

    min_loop_gap_sec: float = 0.0
    exclude_last_n: int = 0

    def excluded(self, query: KeyframeRecord, other: KeyframeRecord) -> bool:
        """True when ``other`` is the query itself or too recent in the query's own stream."""
        if (other.robot_id, other.session_id) != (query.robot_id, query.session_id):
            return False
        if other.stamp_ns > query.stamp_ns - self.min_loop_gap_sec * NS:
            return True
        return query.keyframe_id - other.keyframe_id <= self.exclude_last_n


class GroundTruth(Protocol):
    """What the evaluation needs from a ground truth."""

    def is_true(self, query: KeyframeRecord, match: KeyframeRecord) -> bool:
        """Is reporting ``match`` for ``query`` a correct loop closure?"""

    def has_true(self, query: KeyframeRecord, database: Sequence[KeyframeRecord]) -> bool:
        """Does ``database`` (keyframes in the map when the query arrived) hold a true loop?"""


class PoseGroundTruth:
    """A pair is a true loop when the positions are within ``radius_m`` and it is not excluded."""

    def __init__(self, radius_m: float, exclusion: Exclusion = Exclusion()) -> None:
        if not radius_m > 0:
            raise InputError(f"gt radius {radius_m!r} m must be positive; give e.g. --gt-radius-m 3")
        self.radius_m = float(radius_m)
        self.exclusion = exclusion

    def is_true(self, query: KeyframeRecord, match: KeyframeRecord) -> bool:
        if query.position is None or match.position is None or self.exclusion.excluded(query, match):
            return False
        return float(np.linalg.norm(query.position - match.position)) <= self.radius_m

    def has_true(self, query: KeyframeRecord, database: Sequence[KeyframeRecord]) -> bool:
        if query.position is None:
            return False
        usable = [m for m in database if m.position is not None and not self.exclusion.excluded(query, m)]
        if not usable:
            return False
        positions = np.stack([m.position for m in usable])
        return bool(np.any(np.linalg.norm(positions - query.position, axis=1) <= self.radius_m))


class IndexGroundTruth:
    """Frame-index ground truth: query frame ``q`` matches reference frames ``pairs[q]``.

    A keyframe's query index is ``frame_index - query_offset`` and its reference index
    ``frame_index - ref_offset``. ``query_sessions`` / ``ref_sessions`` restrict which sessions play
    each role (None: any). Multi-session (query bag against a loaded reference map): offsets 0,
    sessions given. Single stream (reference frames 0..n-1, then the query frames): ``query_offset=n``.
    """

    def __init__(self, pairs: Mapping[int, Collection[int]], *, query_offset: int = 0, ref_offset: int = 0,
                 query_sessions: Collection[str] | None = None, ref_sessions: Collection[str] | None = None,
                 exclusion: Exclusion = Exclusion()) -> None:
        self.pairs = {int(q): frozenset(int(r) for r in refs) for q, refs in pairs.items()}
        self.query_offset, self.ref_offset = int(query_offset), int(ref_offset)
        self.query_sessions = None if query_sessions is None else frozenset(query_sessions)
        self.ref_sessions = None if ref_sessions is None else frozenset(ref_sessions)
        self.exclusion = exclusion

    def _refs(self, query: KeyframeRecord) -> frozenset[int]:
        if self.query_sessions is not None and query.session_id not in self.query_sessions:
            return frozenset()
        if query.frame_index < self.query_offset:
            return frozenset()
        return self.pairs.get(query.frame_index - self.query_offset, frozenset())

    def is_true(self, query: KeyframeRecord, match: KeyframeRecord) -> bool:
        if self.ref_sessions is not None and match.session_id not in self.ref_sessions:
            return False
        if match.frame_index < self.ref_offset or self.exclusion.excluded(query, match):
            return False
        return (match.frame_index - self.ref_offset) in self._refs(query)

    def has_true(self, query: KeyframeRecord, database: Sequence[KeyframeRecord]) -> bool:
        return bool(self._refs(query)) and any(self.is_true(query, m) for m in database)


def load_vprbench_gt(path: str | Path) -> dict[int, frozenset[int]]:
    """Read VPR-Bench ``ground_truth_new.npy``: rows ``[query_idx, [ref_idx, ...]]`` -> {q: {r, ...}}.

    The file is a pickled object array (VPR-Bench's format), so only load files you trust.
    """
    path = Path(path)
    try:
        array = np.load(path, allow_pickle=True)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read ground truth {path}: {exc}; give a VPR-Bench "
                         "ground_truth_new.npy") from exc
    pairs: dict[int, frozenset[int]] = {}
    try:
        for row in array:
            query, refs = row[0], row[1]
            pairs[int(query)] = frozenset(int(r) for r in np.atleast_1d(refs))
    except (TypeError, IndexError, ValueError) as exc:
        raise InputError(f"ground truth {path} is not rows of [query_idx, [ref_idx, ...]]: {exc}") from exc
    return pairs
