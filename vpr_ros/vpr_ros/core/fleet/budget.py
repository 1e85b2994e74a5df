"""How much of the map other robots may fill, ROS-free (fleet mode, docs/fleet.md "Budgets").

A remote keyframe costs memory on the receiver: its float32 global descriptor, the index's copy of
it, the Keyframe object and an optional pose (measured: 7.1 kB for a 768-d descriptor,
:func:`remote_keyframe_bytes`). Any participant of the DDS domain can publish batches, so one peer
robot may hold at most ``peer_bytes`` and all peers together ``total_bytes``; keyframes beyond
either are refused and counted. Keyframes are reserved when a batch arrives (so the queue between
the callback and the processing thread is bounded too) and settled when the detector has added them
(ids it already held give their reservation back).
"""

from __future__ import annotations

import collections

__all__ = ["RemoteBudget", "remote_keyframe_bytes", "KEYFRAME_OVERHEAD_BYTES"]

#: Bytes of one remote keyframe beyond its descriptor and index copy (object, arrays, pose), measured
#: with add_remote_keyframes (768-d: 7 057 B/keyframe without a pose, 7 329 B with one).
KEYFRAME_OVERHEAD_BYTES = 1200


def remote_keyframe_bytes(dim: int) -> int:
    """Memory of one remote keyframe with a ``dim``-d descriptor (float32 + the index's float32 copy)."""
    return 8 * int(dim) + KEYFRAME_OVERHEAD_BYTES


class RemoteBudget:
    """Per-peer and total keyframe budgets (bytes, turned into keyframes of ``keyframe_bytes`` each)."""

    def __init__(self, peer_bytes: float, total_bytes: float, keyframe_bytes: int) -> None:
        self.keyframe_bytes = max(int(keyframe_bytes), 1)
        self.peer_max = int(peer_bytes // self.keyframe_bytes)
        self.total_max = int(total_bytes // self.keyframe_bytes)
        self._held: collections.Counter[str] = collections.Counter()
        self._pending: collections.Counter[str] = collections.Counter()

    @property
    def held(self) -> int:
        """Remote keyframes in the map (all peers)."""
        return sum(self._held.values())

    @property
    def held_bytes(self) -> int:
        return self.held * self.keyframe_bytes

    def peer_held(self, robot: str) -> int:
        return self._held[robot]

    def reserve(self, robot: str, n: int) -> int:
        """How many of ``n`` new keyframes of ``robot`` fit (0..n); they are reserved until :meth:`settle`."""
        used = self._held[robot] + self._pending[robot]
        total = sum(self._held.values()) + sum(self._pending.values())
        allowed = max(0, min(int(n), self.peer_max - used, self.total_max - total))
        if allowed:
            self._pending[robot] += allowed
        return allowed

    def settle(self, robot: str, reserved: int, added: int) -> None:
        """``added`` of the ``reserved`` keyframes joined the map; the rest (already held) are released."""
        self._pending[robot] -= int(reserved)
        if self._pending[robot] <= 0:
            del self._pending[robot]
        self._held[robot] += int(added)
