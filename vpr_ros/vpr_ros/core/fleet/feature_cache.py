"""A memory bound for local features fetched from other robots (decentralised fleet, docs/fleet.md).

Remote keyframes arrive with their global descriptor only; their dense local features are fetched
when they become candidates and kept on the keyframe so later queries verify against them without
asking again. Over a long multi-robot run that is every remote keyframe ever verified (SelaVPR: 1.9
MB each in float32), so the cache drops the features of the keyframes fetched longest ago once it
holds more than its budget; such a keyframe is fetched again if it is a candidate again.
"""

from __future__ import annotations

import collections

from vpr_ros.core.types import Keyframe

__all__ = ["FetchedFeatures"]


class FetchedFeatures:
    """Keyframes whose ``local`` was fetched, oldest first, at most ``budget_bytes`` of features."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = int(budget_bytes)
        self._held: collections.OrderedDict[int, tuple[Keyframe, int]] = collections.OrderedDict()
        self.bytes = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._held)

    def add(self, kf: Keyframe) -> list[Keyframe]:
        """Account for ``kf.local`` (just fetched); returns the keyframes whose features were dropped
        (their ``local`` is None again). The newest keyframe is kept even when it alone is over budget:
        the query being verified needs it now."""
        if kf.local is None:
            return []
        old = self._held.pop(id(kf), None)
        if old is not None:
            self.bytes -= old[1]
        size = int(kf.local.nbytes)
        self._held[id(kf)] = (kf, size)
        self.bytes += size
        dropped = []
        while self.bytes > self.budget_bytes and len(self._held) > 1:
            _, (victim, vsize) = self._held.popitem(last=False)
            self.bytes -= vsize
            victim.local = None
            dropped.append(victim)
        self.evicted += len(dropped)
        return dropped
