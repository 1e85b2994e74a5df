"""``lio_sam_bridge``: our loop closures as LIO-SAM external loop requests.

    ros2 launch vpr_ros lio_sam_bridge.launch.py

Publishes ``std_msgs/Float64MultiArray`` ``data = [t_cur, t_pre]`` (the query's and the match's image
stamps, seconds) on ``lio_loop/loop_closure_detection``. LIO-SAM (``mapOptimization``) snaps each
stamp to its own keyframes and **recomputes the relative pose with its own ICP** (starting from its
current poses, so it works only while its drift is below its ICP correspondence distance); our pose
and covariance are not sent. It ignores pairs less than ``historyKeyframeSearchTimeDiff`` (30 s)
apart: the bridge enforces ``lio_sam.min_separation_sec`` and counts what it drops. LIO-SAM keeps only
its 5 newest requests and takes one per loop-closure cycle (``loopClosureFrequency``, 1 Hz), so
the bridge sends at most one per ``lio_sam.min_period_sec`` from a queue of ``lio_sam.queue_size``.
Only loops within one robot and session are sent (LIO-SAM has one trajectory).
"""

from __future__ import annotations

import collections
from typing import Any

from std_msgs.msg import Float64MultiArray

from vpr_ros.core.geometry.backend_edges import BackendLoop
from vpr_ros.core.geometry.backend_nodes import SeparationGate
from vpr_ros.nodes.bridges.common import RELIABLE, BridgeNode, run_bridge, spec

__all__ = ["LioSamBridge", "main"]


class LioSamBridge(BridgeNode):
    BACKEND = "LIO-SAM"
    PARAMETERS = (
        spec("lio_sam.min_separation_sec", float, 30.0,
             "Send only loops whose two stamps are at least this far apart, seconds (LIO-SAM's "
             "historyKeyframeSearchTimeDiff; it ignores closer pairs).", lo=0.0, hi=1e6),
        spec("lio_sam.min_period_sec", float, 1.0,
             "At most one request per this many seconds (LIO-SAM's 1/loopClosureFrequency).", lo=0.01, hi=3600.0),
        spec("lio_sam.queue_size", int, 5,
             "Requests waiting to be sent; when full the oldest is dropped (LIO-SAM keeps 5).", lo=1, hi=1000),
    )
    COUNTERS = ("requests_sent", "skipped.too_close_in_time", "skipped.duplicate", "skipped.other_stream",
                "dropped.queue_full")
    NOTES = {"pose": "not sent: LIO-SAM recomputes the relative pose with its own ICP",
             "data": "[t_cur (query stamp, s), t_pre (match stamp, s)]"}

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("lio_sam_bridge", **kwargs)
        self._gate = SeparationGate(self.params["lio_sam.min_separation_sec"])
        self._queue: collections.deque[tuple[float, float]] = collections.deque()
        self._pub = self.create_publisher(Float64MultiArray, "lio_loop/loop_closure_detection", RELIABLE)
        self.create_timer(self.params["lio_sam.min_period_sec"], self._send_one)

    def on_loop(self, loop: BackendLoop) -> None:
        if not loop.same_stream:
            self.count("skipped.other_stream")
            return
        reason = self._gate.check(loop.query.stamp_ns, loop.match.stamp_ns)
        if reason is not None:
            self.count(f"skipped.{reason}")
            return
        if len(self._queue) >= self.params["lio_sam.queue_size"]:
            self._queue.popleft()
            self.count("dropped.queue_full")
        self._queue.append((loop.query.stamp_ns * 1e-9, loop.match.stamp_ns * 1e-9))

    def _send_one(self) -> None:
        if self._queue:
            t_cur, t_pre = self._queue.popleft()
            self._pub.publish(Float64MultiArray(data=[t_cur, t_pre]))
            self.count("requests_sent")

    def extra_diagnostics(self) -> dict[str, str]:
        return {"requests_queued": str(len(self._queue))}


def main(args: list[str] | None = None) -> int:
    """Entry point (``ros2 run vpr_ros lio_sam_bridge``)."""
    return run_bridge(LioSamBridge, "lio_sam_bridge", args)


if __name__ == "__main__":
    import sys

    sys.exit(main())
