"""Fleet loops a robot receives (nodes/fleet.py, docs/fleet.md "Fleet input"): a mixin of FleetLink.

A loop on ``<prefix>/loops`` that names this robot as the matched robot is republished on its own
``loop_closures`` only after its checks: names, ids, stamps, model and finite numbers
(nodes/fleet_msgs.check_fleet_loop), the match keyframe is one of ours with the loop's stamp
(``loop_target``), and the query keyframe is one its robot broadcast with that stamp
(core/fleet/loop_guard.py, ``loop_sender``). Uses FleetLink's ``robot_id``, ``_detector``,
``_mutex``, ``_own``, ``_loop_guard``, ``_loop_pub``, ``_count`` and ``_refuse``.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

from vpr_ros_msgs.msg import LoopClosure as LoopClosureMsg

from vpr_ros.core.detector import LoopClosureDetector
from vpr_ros.core.fleet.loop_guard import LoopGuard, LoopKeys
from vpr_ros.core.fleet.validation import Refused
from vpr_ros.nodes.fleet_msgs import check_fleet_loop

__all__ = ["FleetLoopsMixin"]


class FleetLoopsMixin:
    """Checks and republishes the fleet loops onto this robot (see the module docstring)."""

    robot_id: str
    _detector: LoopClosureDetector
    _mutex: threading.Lock
    _own: dict[tuple[str, int], int]
    _loop_guard: LoopGuard[LoopClosureMsg]
    _loop_pub: Any
    _count: Callable[[str, int], None]
    _refuse: Callable[..., None]

    def _on_fleet_loop(self, msg: LoopClosureMsg) -> None:
        if msg.match_robot_id != self.robot_id or msg.query_robot_id == self.robot_id:
            return  # not a loop onto us (ours, echoed back, or between two other robots)
        try:
            query, match = check_fleet_loop(msg, self._detector.model_id, self._detector.model.global_dim)
            self._check_own(match)
            with self._mutex:
                now = self._loop_guard.offer(query, msg, time.monotonic())
        except Refused as exc:
            self._refuse(msg.query_robot_id, msg.query_session_id, exc.reason, f"fleet loop: {exc}")
            return
        except Exception as exc:  # noqa: BLE001 - nothing a peer sends may end the executor
            self._refuse(msg.query_robot_id, msg.query_session_id, "malformed", f"fleet loop: {exc}")
            return
        if now:
            self._republish(msg)

    def _check_own(self, match: LoopKeys) -> None:
        """The loop's match keyframe is one of ours, in the map, with the loop's stamp."""
        with self._mutex:
            key = self._own.get((match.session_id, match.keyframe_id))
        kfs = self._detector.keyframes
        kf = kfs[key] if key is not None and key < len(kfs) else None
        if kf is None or (kf.robot_id, kf.session_id, kf.id, kf.stamp_ns) != (
                self.robot_id, match.session_id, match.keyframe_id, match.stamp_ns):
            raise Refused("loop_target", f"loop names keyframe {match.keyframe_id} (session "
                          f"{match.session_id[:40]!r}, stamp {match.stamp_ns} ns), which this robot does not hold")

    def _release_loops(self) -> None:
        with self._mutex:
            ready, refused = self._loop_guard.ready(time.monotonic())
        for exc in refused:
            self._refuse("(fleet loop)", "", exc.reason, str(exc))
        for msg in ready:
            self._republish(msg)

    def _republish(self, msg: LoopClosureMsg) -> None:
        self._loop_pub.publish(msg)
        self._count("fleet.inter_robot_loops.received", 1)
        self._count("loop_closures", 1)
