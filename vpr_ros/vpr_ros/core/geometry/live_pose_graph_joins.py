"""The join guard of the live pose graph (core/geometry/live_pose_graph.py): two graph components are
joined only when enough loops between them agree on where one lies in the other.

The only constraint between two components is the loop that joins them, so the robust kernel cannot
reject it: one wrong loop would put a whole robot (or the robot into a loaded map) in the wrong place.
Loops between two components not yet joined therefore wait here, per pair of components.

**Placement.** A loop with match node ``m`` in component A and query node ``q`` in component B places
B in A: ``T_A_B = T_m @ T_match_query @ T_q^-1`` (current estimates, each in its component's frame;
a loop the other way round gives ``T_q @ T_match_query^-1 @ T_m^-1`` with q in A).

**Agreement** of loops i and j, tested where the loops are: placing B with loop i puts loop j's B-side
keyframe within ``join_max_position_m`` of where loop j puts it, and the other way round, and the two
placements' rotations differ by at most ``join_max_rotation_deg``. A fixed tolerance rather than a
Mahalanobis test: the drift between two loops far apart along a trajectory can exceed it, but loops come
in runs at a revisited place, whose members agree to the loop noise, and the tolerance says in metres
what the join accepts. Odometry drift between far loops only delays the join to the next run.

**Consensus** (a single-loop RANSAC over the waiting loops of one pair): each metric loop proposes its
placement; the loops agreeing with it are its support; the largest support (the earliest loop on a tie)
joins the pair once it holds ``join_min_loops`` loops. The join moves the lower-ranked component by the
proposing loop's placement, and every supporting loop becomes a factor. The pair's other metric loops are
left out for good and counted (``loops_join_refused``).

**Loops that cannot place a component**: appearance-only loops (no measured pose) and loops of unknown
translation scale do not vote. They wait with the others and become ordinary robust factors once their
two components are joined (by metric loops of theirs or through a third component); until then they
constrain nothing. With ``join_min_loops`` 1 every loop joins at once, as before the guard (an
appearance-only loop then places the component at the matched keyframe, as the "same place" factor says).

Each pair keeps at most ``join_max_waiting_loops`` loops; the oldest is dropped and counted.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
import numpy.typing as npt

from vpr_ros.core.geometry.live_pose_graph_types import StreamKey

__all__ = ["WaitingLoop", "JoinDecision", "JoinGuard", "placement"]

F64 = npt.NDArray[np.float64]


@dataclasses.dataclass(frozen=True)
class WaitingLoop:
    """A loop between two components: graph nodes ``match`` and ``query``, the factor's measured
    T_match_query (4, 4) and ROS-layout covariance (6, 6); ``metric``: it can place a component."""

    match: int
    query: int
    measured: F64
    covariance: F64
    metric: bool


@dataclasses.dataclass(frozen=True)
class JoinDecision:
    """Join the components of ``seed`` through it; ``loops``: the agreeing set (seed included) and the
    pair's non-metric loops, all to become factors; ``refused``: the pair's metric loops left out."""

    seed: WaitingLoop
    loops: list[WaitingLoop]
    refused: list[WaitingLoop]


def placement(match: int, query: int, measured: F64, side_a: StreamKey, root: Callable[[int], StreamKey],
              estimate: Callable[[int], F64]) -> tuple[F64, F64]:
    """(T_A_B (4, 4), the loop's B-side keyframe pose in B's frame (4, 4)) where A = ``side_a``, for the
    loop of graph nodes ``match`` and ``query`` measuring T_match_query ``measured``: the transform that
    moves component B into A's frame so that the loop holds (used by the join itself too)."""
    if root(match) == side_a:
        t_b = estimate(query)
        return estimate(match) @ measured @ np.linalg.inv(t_b), t_b
    t_b = estimate(match)
    return estimate(query) @ np.linalg.inv(measured) @ np.linalg.inv(t_b), t_b


def agreement(t_ab: F64, sites: F64, max_position_m: float, max_rotation_deg: float) -> npt.NDArray[np.bool_]:
    """(W, W) whether placements ``t_ab`` (W, 4, 4) agree pairwise, tested at ``sites`` (W, 4, 4): the
    B-side keyframe of each loop (see the module docstring)."""
    # placed[i, s]: where placement i puts site s, in A's frame
    placed = np.einsum("iab,sb->isa", t_ab[:, :3, :3], sites[:, :3, 3]) + t_ab[:, None, :3, 3]
    own = placed[np.arange(len(t_ab)), np.arange(len(t_ab))]           # (W, 3): site j by its own loop j
    gap = np.linalg.norm(placed - own[None, :, :], axis=2)              # gap[i, j]: site j, i vs j
    gap = np.maximum(gap, gap.T)
    cos = (np.einsum("iab,jab->ij", t_ab[:, :3, :3], t_ab[:, :3, :3]) - 1.0) / 2.0
    angle = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
    return (gap <= max_position_m) & (angle <= max_rotation_deg)


class JoinGuard:
    """Loops between components not yet joined, waiting for a consensus (see the module docstring)."""

    def __init__(self, min_loops: int, max_position_m: float, max_rotation_deg: float, max_waiting: int) -> None:
        self.min_loops, self.max_waiting = min_loops, max_waiting
        self.max_position_m, self.max_rotation_deg = max_position_m, max_rotation_deg
        self._waiting: list[WaitingLoop] = []
        self.dropped = 0
        self.refused = 0

    def __len__(self) -> int:
        return len(self._waiting)

    def add(self, loop: WaitingLoop, root: Callable[[int], StreamKey]) -> None:
        """Let ``loop`` wait; the oldest loop of its pair goes when the pair is full."""
        pair = self._pair(loop, root)
        same = [k for k, w in enumerate(self._waiting) if self._pair(w, root) == pair]
        if len(same) >= self.max_waiting:
            del self._waiting[same[0]]
            self.dropped += 1
        self._waiting.append(loop)

    def take_joined(self, root: Callable[[int], StreamKey]) -> list[WaitingLoop]:
        """Remove and return the loops whose two components are now one (joined another way)."""
        joined = [w for w in self._waiting if root(w.match) == root(w.query)]
        self._waiting = [w for w in self._waiting if root(w.match) != root(w.query)]
        return joined

    def decide(self, pair: frozenset[StreamKey], root: Callable[[int], StreamKey],
               estimate: Callable[[int], F64]) -> JoinDecision | None:
        """The join of ``pair`` if its waiting loops reach a consensus (then they leave the guard)."""
        group = [w for w in self._waiting if self._pair(w, root) == pair]
        metric = [w for w in group if w.metric]
        if len(metric) < self.min_loops:
            return None
        side_a = min(pair)
        placed = [placement(w.match, w.query, w.measured, side_a, root, estimate) for w in metric]
        agree = agreement(np.stack([p[0] for p in placed]), np.stack([p[1] for p in placed]),
                          self.max_position_m, self.max_rotation_deg)
        support = agree.sum(axis=1)
        best = int(np.argmax(support))  # the first of the largest: the earliest loop on a tie
        if support[best] < self.min_loops:
            return None
        chosen = [w for w, ok in zip(metric, agree[best]) if ok]
        refused = [w for w, ok in zip(metric, agree[best]) if not ok]
        self._waiting = [w for w in self._waiting if self._pair(w, root) != pair]
        self.refused += len(refused)
        others = [w for w in group if not w.metric]
        return JoinDecision(metric[best], chosen + others, refused)

    def settle(self, pair: frozenset[StreamKey], loop: WaitingLoop, root: Callable[[int], StreamKey],
               estimate: Callable[[int], F64], join: Callable[[int, int, F64], None],
               add: Callable[[int, int, F64, F64], None]) -> str:
        """Join ``pair`` (then any pair that join merged) while its waiting loops agree: ``join(match, query,
        measured)`` moves a component, ``add(match, query, measured, covariance)`` makes a loop a factor.
        Returns what became of ``loop``: "waiting", "added" or "refused"."""
        outcome, todo = "waiting", [pair]
        while todo:
            decision = self.decide(todo.pop(0), root, estimate)
            if decision is None:
                continue
            join(decision.seed.match, decision.seed.query, decision.seed.measured)
            for w in decision.loops + self.take_joined(root):
                add(w.match, w.query, w.measured, w.covariance)
                outcome = "added" if w is loop else outcome
            outcome = "refused" if any(w is loop for w in decision.refused) else outcome
            todo = self.pairs(root)  # merged components: their waiting loops may agree now
        return outcome

    def pairs(self, root: Callable[[int], StreamKey]) -> list[frozenset[StreamKey]]:
        """The pairs of components with loops waiting, oldest loop first."""
        return list(dict.fromkeys(self._pair(w, root) for w in self._waiting))

    @staticmethod
    def _pair(loop: WaitingLoop, root: Callable[[int], StreamKey]) -> frozenset[StreamKey]:
        return frozenset((root(loop.match), root(loop.query)))

