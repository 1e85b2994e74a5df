"""Which fleet loops a robot republishes, ROS-free (fleet mode, docs/fleet.md "Fleet input").

An inter-robot loop is found by the robot that made the query keyframe, which publishes it on the
fleet loops topic; the matched robot republishes it on its own ``loop_closures``. DDS does not say
which participant sent a message, so the matched robot checks the loop against what the query robot
itself broadcast: the query keyframe (robot, session, id) must be one that robot sent in its
keyframe batches, with the same stamp. The loop usually arrives before the batch that carries its
query keyframe (batches wait for the byte budget), so such a loop waits up to ``wait_sec``; one
whose query keyframe never comes (or comes with another stamp) is refused as ``loop_sender``.
(The match side, an own keyframe that exists with the loop's stamp, the node checks on arrival.)
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Generic, Sequence, TypeVar

from vpr_ros.core.fleet.validation import Refused

__all__ = ["LoopGuard", "LoopKeys"]

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class LoopKeys:
    """The query keyframe a loop names: (robot, session, id) and its stamp."""

    robot_id: str
    session_id: str
    keyframe_id: int
    stamp_ns: int


class LoopGuard(Generic[T]):
    """Remembers the last ``recent`` keyframes peers broadcast and holds at most ``pending`` loops
    (payloads of type T) until their query keyframe is among them or ``wait_sec`` passed."""

    def __init__(self, wait_sec: float, recent: int = 50_000, pending: int = 256) -> None:
        self.wait_sec = float(wait_sec)
        self._recent: collections.OrderedDict[tuple[str, str, int], int] = collections.OrderedDict()
        self._recent_max = int(recent)
        self._pending: collections.deque[tuple[float, LoopKeys, T]] = collections.deque()
        self._pending_max = int(pending)

    def __len__(self) -> int:
        return len(self._pending)

    def seen(self, robot_id: str, session_id: str, ids: Sequence[int], stamps_ns: Sequence[int]) -> None:
        """Keyframes ``robot_id`` broadcast (a batch that passed its checks)."""
        for kid, stamp in zip(ids, stamps_ns):
            key = (robot_id, session_id, int(kid))
            self._recent[key] = int(stamp)
            self._recent.move_to_end(key)
        while len(self._recent) > self._recent_max:
            self._recent.popitem(last=False)

    def _known(self, keys: LoopKeys) -> bool | None:
        """True: the query robot broadcast this keyframe with this stamp; None: not (yet) seen."""
        stamp = self._recent.get((keys.robot_id, keys.session_id, keys.keyframe_id))
        if stamp is None:
            return None
        if stamp != keys.stamp_ns:
            raise Refused("loop_sender", f"robot {keys.robot_id!r} broadcast keyframe {keys.keyframe_id} with "
                          f"stamp {stamp} ns, the loop names {keys.stamp_ns} ns")
        return True

    def offer(self, keys: LoopKeys, payload: T, now: float) -> bool:
        """True: publish ``payload`` now; False: it waits (:meth:`ready`); raises Refused."""
        if self._known(keys):
            return True
        if len(self._pending) >= self._pending_max:
            raise Refused("loop_sender", f"{len(self._pending)} loops already wait for their query keyframes")
        self._pending.append((now + self.wait_sec, keys, payload))
        return False

    def ready(self, now: float) -> tuple[list[T], list[Refused]]:
        """Waiting loops whose query keyframe arrived (publish them), and the refusals of the others
        that timed out or whose keyframe came with another stamp."""
        out: list[T] = []
        refused: list[Refused] = []
        keep: collections.deque[tuple[float, LoopKeys, T]] = collections.deque()
        for deadline, keys, payload in self._pending:
            try:
                if self._known(keys):
                    out.append(payload)
                elif now >= deadline:
                    raise Refused("loop_sender", f"robot {keys.robot_id!r} never broadcast keyframe "
                                  f"{keys.keyframe_id} (session {keys.session_id!r}) within {self.wait_sec:g} s")
                else:
                    keep.append((deadline, keys, payload))
            except Refused as exc:
                refused.append(exc)
        self._pending = keep
        return out, refused
