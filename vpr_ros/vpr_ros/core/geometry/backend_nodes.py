"""Which node of a SLAM backend each of our keyframes is (docs/backends.md), ROS-free.

- :class:`StampIndex`: a backend's nodes by sensor stamp (RTAB-Map's ``mapData`` nodes); our
  keyframe is the node with the nearest stamp within a tolerance (RTAB-Map's detection period).
- :class:`LinkConfirmations`: RTAB-Map's ``add_link`` answers nothing, so a sent link counts as
  accepted when a later map graph holds it and as rejected when ``graphs`` map graphs received
  after it was sent do not.
- :func:`robot_index`: a GTSAM-based backend's small integer robot id for our robot id.
- :class:`SeparationGate`: LIO-SAM ignores loops whose two stamps are closer than its
  ``historyKeyframeSearchTimeDiff``.
"""

from __future__ import annotations

import bisect
import dataclasses
import re
from typing import Iterable, Sequence

import numpy as np
import numpy.typing as npt

from vpr_ros.core.geometry.backend_edges import compose_edge, invert_edge

__all__ = ["StampedNode", "StampIndex", "LinkConfirmations", "robot_index", "SeparationGate",
           "stamp_gap", "edge_between_nodes"]

F64 = npt.NDArray[np.float64]


@dataclasses.dataclass(frozen=True)
class StampedNode:
    """A backend node: its id, sensor stamp and (optional) odometry pose of its base, (4, 4)."""

    node_id: int
    stamp_ns: int
    odom_pose: F64 | None = None


class StampIndex:
    """Backend nodes in stamp order; a repeated id replaces its entry (RTAB-Map resends nodes)."""

    def __init__(self) -> None:
        self._stamps: list[int] = []
        self._nodes: list[StampedNode] = []
        self._by_id: dict[int, StampedNode] = {}

    def __len__(self) -> int:
        return len(self._nodes)

    def __contains__(self, node_id: int) -> bool:
        return node_id in self._by_id

    def add(self, node: StampedNode) -> None:
        old = self._by_id.pop(node.node_id, None)
        if old is not None:  # found by its stamp: a full map resent is O(n log n), not O(n^2)
            i = bisect.bisect_left(self._stamps, old.stamp_ns)
            while self._nodes[i] is not old:
                i += 1
            del self._stamps[i], self._nodes[i]
        i = bisect.bisect_right(self._stamps, node.stamp_ns)
        self._stamps.insert(i, node.stamp_ns)
        self._nodes.insert(i, node)
        self._by_id[node.node_id] = node

    def nearest(self, stamp_ns: int, max_diff_ns: int) -> StampedNode | None:
        """The node whose stamp is nearest ``stamp_ns`` when at most ``max_diff_ns`` away, else None.
        A tie goes to the earlier node."""
        i = bisect.bisect_left(self._stamps, stamp_ns)
        best: StampedNode | None = None
        best_diff = max_diff_ns + 1
        for j in (i - 1, i):
            if 0 <= j < len(self._stamps):
                diff = abs(self._stamps[j] - stamp_ns)
                if diff < best_diff:
                    best, best_diff = self._nodes[j], diff
        return best


class LinkConfirmations:
    """Links sent to a backend that answers nothing, confirmed or refuted by its later graphs.

    A link is identified by its unordered pair of node ids (a backend may store it reversed)."""

    def __init__(self, graphs: int = 2) -> None:
        if graphs < 1:
            raise ValueError(f"graphs must be >= 1, got {graphs}")
        self.graphs = graphs
        self._pending: dict[frozenset[int], int] = {}  # pair -> graphs seen since it was sent

    @property
    def pending(self) -> int:
        return len(self._pending)

    def sent(self, from_id: int, to_id: int) -> None:
        self._pending[frozenset((from_id, to_id))] = 0

    def graph(self, links: Iterable[tuple[int, int]]) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """One map graph's links (from, to): the pending links it (accepted) and the ones it and the
        graphs before it did not hold (rejected), each as a sorted (id, id) pair."""
        present = {frozenset(link) for link in links}
        accepted, rejected = [], []
        for pair in list(self._pending):
            ids = tuple(sorted(pair)) if len(pair) == 2 else (next(iter(pair)),) * 2
            if pair in present:
                accepted.append(ids)
                del self._pending[pair]
                continue
            self._pending[pair] += 1
            if self._pending[pair] >= self.graphs:
                rejected.append(ids)
                del self._pending[pair]
        return accepted, rejected


def robot_index(robot_id: str, names: Sequence[str]) -> int | None:
    """A backend's small integer robot id for our string robot id: its position in ``names`` when
    given, else the number the id ends with (``robot2`` -> 2, ``3`` -> 3), else None."""
    if names:
        return list(names).index(robot_id) if robot_id in names else None
    m = re.search(r"(\d+)$", robot_id)
    return int(m.group(1)) if m else None


class SeparationGate:
    """LIO-SAM's external-loop rule applied before sending: the two stamps at least
    ``min_separation_sec`` apart (LIO-SAM's ``historyKeyframeSearchTimeDiff``; it ignores closer
    pairs), and the same pair of stamps not sent twice."""

    def __init__(self, min_separation_sec: float = 30.0) -> None:
        self.min_separation_ns = int(round(min_separation_sec * 1e9))
        self._sent: set[tuple[int, int]] = set()

    def check(self, query_stamp_ns: int, match_stamp_ns: int) -> str | None:
        """None when the pair may be sent (it is then remembered as sent), else the reason."""
        if abs(query_stamp_ns - match_stamp_ns) < self.min_separation_ns:
            return "too_close_in_time"
        if (query_stamp_ns, match_stamp_ns) in self._sent:
            return "duplicate"
        self._sent.add((query_stamp_ns, match_stamp_ns))
        return None


def stamp_gap(node: StampedNode, keyframe_pose: F64 | None) -> F64 | None:
    """``node_T_keyframe``, the motion between a backend node and our keyframe near it, from both
    odometry poses (the same odometry source: the small gap between the two stamps); None when
    either pose is missing."""
    if node.odom_pose is None or keyframe_pose is None:
        return None
    return np.linalg.inv(node.odom_pose) @ np.asarray(keyframe_pose, np.float64)


def edge_between_nodes(T_match_query: npt.ArrayLike, covariance: npt.ArrayLike | None,
                       query_gap: F64 | None = None, match_gap: F64 | None = None) -> tuple[F64, F64 | None]:
    """Our loop (base frames) as the edge from the query's node to the match's node, RTAB-Map's
    ``Link`` direction: ``T_nodeQ_nodeM = T_nodeQ_kfQ T_kfQ_kfM T_kfM_nodeM`` with the gaps
    (``node_T_keyframe``, identity when None) taken as exact, and the covariance of the right
    perturbation in the match node's frame."""
    T_qm, cov = invert_edge(T_match_query, covariance)
    A = np.eye(4) if query_gap is None else np.asarray(query_gap, np.float64)
    B = np.eye(4) if match_gap is None else np.linalg.inv(np.asarray(match_gap, np.float64))
    return compose_edge(A, T_qm, cov, B)
