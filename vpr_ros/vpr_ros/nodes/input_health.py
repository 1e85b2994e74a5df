"""ROS-free pieces of the node's input watch (issue 18) and of its startup checks (issue 20).

- :class:`StampGaps` estimates frames lost before they reached the node from the gaps between
  consecutive header stamps: a camera stamps its frames one period apart, so a gap of k periods means
  k - 1 frames never arrived (best-effort QoS over a lossy link drops them without a trace).
- :class:`LoopReport` turns published loop closures into at most one INFO line per interval.
- :func:`params_file_problem` finds a ``--params-file`` that does not exist before ``rclpy.init``
  turns it into an RCLError traceback.

No ROS imports: tests use these without DDS; ``nodes/input_watch.py`` wires them into the node.
"""

from __future__ import annotations

import collections
import os
import threading
from typing import Sequence

__all__ = ["StampGaps", "LoopReport", "params_file_problem", "IMAGE_TYPES", "no_input_hint"]

#: Message types the node can subscribe to on ``image`` (their ROS graph names).
IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
#: Recent gaps used for the typical period and the recent loss share.
WINDOW = 100
#: Gaps needed before any is judged (earlier ones are judged once there are this many).
MIN_GAPS = 8
#: A gap longer than this many typical periods (and longer than PAUSE_MIN_NS) is the stream pausing
#: (a bag restarted, a camera stopped), not lost frames.
PAUSE_PERIODS = 20
PAUSE_MIN_NS = 2_000_000_000


def _typical_period(gaps: Sequence[int]) -> float:
    """The camera's period from recent gaps, robust to losses even when most gaps hold some:
    the median of the gaps near the 10th percentile (the frames that did arrive back to back)."""
    ordered = sorted(gaps)
    low = ordered[len(ordered) // 10]
    near = [g for g in ordered if g <= 1.5 * low]
    return float(near[len(near) // 2])


def _lost_in(gap: int, period: float) -> int:
    if gap > max(PAUSE_MIN_NS, PAUSE_PERIODS * period):
        return 0
    return max(int(round(gap / period)) - 1, 0)


class StampGaps:
    """Frames lost before the node, estimated from header stamp gaps (thread-safe).

    ``lost`` counts every judged gap since start; :meth:`recent` gives the loss share of the last
    :data:`WINDOW` gaps, which is what the node warns about (a burst long ago does not warn forever).
    Stamps that repeat or go backwards restart the chain (they are counted elsewhere).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: int | None = None
        self._gaps: collections.deque[int] = collections.deque(maxlen=WINDOW)
        self._pending: list[int] = []
        self.lost = 0
        self.received = 0

    def add(self, stamp_ns: int) -> None:
        with self._lock:
            self.received += 1
            last, self._last = self._last, stamp_ns
            if last is None or stamp_ns <= last:
                return
            self._gaps.append(stamp_ns - last)
            self._pending.append(stamp_ns - last)
            if len(self._gaps) >= MIN_GAPS:
                period = _typical_period(self._gaps)
                self.lost += sum(_lost_in(g, period) for g in self._pending)
                self._pending.clear()

    def period_ns(self) -> float | None:
        """The typical period of the recent stamps, or None before :data:`MIN_GAPS` gaps."""
        with self._lock:
            return _typical_period(self._gaps) if len(self._gaps) >= MIN_GAPS else None

    def recent(self) -> tuple[int, int]:
        """(frames lost, frames received) over the last :data:`WINDOW` gaps; (0, n) before MIN_GAPS."""
        with self._lock:
            if len(self._gaps) < MIN_GAPS:
                return 0, len(self._gaps)
            period = _typical_period(self._gaps)
            return sum(_lost_in(g, period) for g in self._gaps), len(self._gaps)


class LoopReport:
    """Counts published loop closures; :meth:`due` gives one summary line at most every ``interval`` s."""

    def __init__(self, interval: float = 1.0) -> None:
        self._lock = threading.Lock()
        self.interval = interval
        self.total = 0
        self._pending = 0
        self._latest = ""
        self._last_report = -1e18

    def add(self, count: int, latest: str) -> None:
        with self._lock:
            self.total += count
            self._pending += count
            self._latest = latest

    def due(self, now: float) -> str | None:
        """The summary of the loops not yet reported, when there are some and ``interval`` has passed."""
        with self._lock:
            if not self._pending or now - self._last_report < self.interval:
                return None
            since = now - self._last_report
            span = f"in the last {since:.1f} s" if since < 1e9 else "since start"
            text = (f"published {self._pending} loop closure{'s' if self._pending > 1 else ''} {span} "
                    f"({self.total} in total); latest: {self._latest}")
            self._pending, self._last_report = 0, now
            return text


def no_input_hint(subscribed_type: str, own_types: Sequence[str], published: dict[str, list[str]],
                  topic: str) -> str:
    """What to do when nothing arrives on ``topic``: the likely fix from what the graph holds.

    own_types: the types publishers offer on ``topic``; published: image topics with publishers -> types.
    """
    compressed = subscribed_type.endswith("CompressedImage")
    other = IMAGE_TYPES[0] if compressed else IMAGE_TYPES[1]
    if other in own_types:
        flag = "false" if compressed else "true"
        return (f"{topic} carries {other}: set image.compressed: {flag} (launch argument "
                f"image_compressed:={flag})")
    if not compressed and IMAGE_TYPES[1] in published.get(topic.rstrip("/") + "/compressed", []):
        return (f"for {topic}/compressed set image.compressed: true (launch argument image_compressed:=true) "
                f"and remap image to it")
    if subscribed_type in own_types:
        return ("it has a publisher, but nothing arrived: has it stopped? (publishers with incompatible QoS "
                "are counted in input.incompatible_qos)")
    candidates = [name for name, types in published.items() if subscribed_type in types]
    if candidates:
        return f"nothing publishes it: remap image (launch argument image_topic:=...) to e.g. {candidates[0]}"
    return "nothing publishes it, and no image topic has a publisher: is the camera driver running?"


def params_file_problem(argv: Sequence[str], cwd: str | None = None) -> str | None:
    """A one-line message for the first ``--params-file`` in the ROS arguments that cannot be read,
    else None (rcl would raise an RCLError traceback from rclpy.init)."""
    in_ros = False
    args = list(argv)
    for i, arg in enumerate(args):
        if arg == "--ros-args":
            in_ros = True
        elif arg == "--":
            in_ros = False
        elif in_ros and arg == "--params-file":
            path = args[i + 1] if i + 1 < len(args) else ""
            full = os.path.join(cwd or os.getcwd(), path)
            if not path or not os.path.isfile(full) or not os.access(full, os.R_OK):
                what = "no path given" if not path else (
                    f"parameter file {path!r} not found" if not os.path.exists(full) else
                    f"parameter file {path!r} is not a readable file")
                where = "" if not path or os.path.isabs(path) else f" (relative to {cwd or os.getcwd()})"
                return (f"{what}{where}: give an existing YAML, e.g. the installed "
                        "$(ros2 pkg prefix vpr_ros)/share/vpr_ros/config/loop_closure.yaml")
    return None
