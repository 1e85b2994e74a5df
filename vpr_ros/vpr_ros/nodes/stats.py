"""Counters, rates and latency percentiles of the node, rendered as diagnostic_msgs.

Thread-safe: the subscription callbacks, the processing thread and the diagnostics timer all touch
one :class:`NodeStats`.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Sequence

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from vpr_ros.core.detector import StepResult
from vpr_ros.core.geometry.relative_pose import REJECTION_REASONS

__all__ = ["NodeStats", "BAD_INPUT_KINDS", "STAGES", "GEOMETRY_COUNTERS"]

#: Every kind of bad input the node counts (diagnostics key ``bad_input.<kind>``).
BAD_INPUT_KINDS = ("unknown_encoding", "empty_image", "malformed_image", "corrupt_compressed",
                   "time_backwards", "nan_odometry", "size_mismatch", "too_large", "unusable_image")
#: Latency stages in milliseconds: node-side (queue wait, convert, publish) and the core's timings.
STAGES = ("queue_wait", "convert", "extract", "select", "search", "verify", "geometry", "detector", "publish",
          "total")
#: Geometry outcomes of accepted loops: a valid measured pose, or no pose and why.
GEOMETRY_COUNTERS = ("geometry.valid", *(f"geometry.rejected.{r}" for r in REJECTION_REASONS),
                     "odometry_gate.rejected")

_RATE_WINDOW_SEC = 10.0
_LATENCY_SAMPLES = 512


class _Rate:
    """Events per second over the last ``_RATE_WINDOW_SEC`` seconds of monotonic time."""

    def __init__(self) -> None:
        self._times: collections.deque[float] = collections.deque()

    def tick(self, now: float) -> None:
        self._times.append(now)
        self._trim(now)

    def _trim(self, now: float) -> None:
        while self._times and now - self._times[0] > _RATE_WINDOW_SEC:
            self._times.popleft()

    def rate(self, now: float) -> float:
        """Like ``ros2 topic hz``: (n - 1) / (last - first); 0 once the stream has stalled."""
        self._trim(now)
        if len(self._times) < 2:
            return 0.0
        span = max(self._times[-1] - self._times[0], 1e-6)
        mean_interval = span / (len(self._times) - 1)
        if now - self._times[-1] > max(2.0, 3.0 * mean_interval):
            return 0.0
        return (len(self._times) - 1) / span


class NodeStats:
    """Everything the diagnostics topic reports."""

    def __init__(self, extra_counters: Sequence[str] = ()) -> None:
        self._lock = threading.Lock()
        self.counters: dict[str, int] = {k: 0 for k in (
            "frames_received", "frames_processed", "frames_dropped", "frames_failed", "keyframes",
            "loop_closures", "odometry_received", "camera_info_received", "autosaves",
            "autosave_failures", *GEOMETRY_COUNTERS, *extra_counters)}
        self.bad_inputs: dict[str, int] = {k: 0 for k in BAD_INPUT_KINDS}
        self._latency = {s: collections.deque(maxlen=_LATENCY_SAMPLES) for s in STAGES}
        self._input_rate = _Rate()
        self._keyframe_rate = _Rate()

    def count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counters[key] += n
            if key == "frames_received":
                self._input_rate.tick(time.monotonic())
            elif key == "keyframes":
                self._keyframe_rate.tick(time.monotonic())

    def geometry(self, result: StepResult) -> None:
        """Count the geometry outcome of one step: published loops with a valid pose, and the
        reason a loop got no pose (published without it or dropped, per geometry.on_invalid)."""
        valid = sum(1 for loop in result.loop_closures if loop.relative_pose_valid)
        if valid:
            self.count("geometry.valid", valid)
        # The odometry gate (StepResult.odometry_rejected) lands in another branch; count it once there.
        gated = int(getattr(result, "odometry_rejected", 0) or 0)
        if gated:
            self.count("odometry_gate.rejected", gated)
        if result.geometry_rejection:
            key = f"geometry.rejected.{result.geometry_rejection}"
            with self._lock:  # a reason added to the core later still shows up, not a KeyError
                self.counters[key] = self.counters.get(key, 0) + 1

    def bad_input(self, kind: str) -> None:
        with self._lock:
            self.bad_inputs[kind] += 1

    def latency(self, timings_ms: dict[str, float]) -> None:
        """Record one sample per stage given (unknown stage names are ignored)."""
        with self._lock:
            for stage, ms in timings_ms.items():
                if stage in self._latency:
                    self._latency[stage].append(float(ms))

    def percentiles(self, stage: str) -> tuple[float, float] | None:
        """(p50, p95) in ms of the recent samples of ``stage``, or None without samples."""
        with self._lock:
            samples = np.asarray(self._latency[stage], dtype=np.float64)
        if samples.size == 0:
            return None
        p50, p95 = np.percentile(samples, [50, 95])
        return float(p50), float(p95)

    def to_msg(self, stamp, name: str, hardware_id: str, extra: dict[str, str],
               warnings: Sequence[str] = ()) -> DiagnosticArray:
        """One DiagnosticStatus with every counter, rate and percentile as key/values.

        Level: WARN while frames are being dropped, failed or bad input has arrived, or when the
        caller passes ``warnings`` (e.g. the map is over its memory budget), otherwise OK.
        """
        now = time.monotonic()
        with self._lock:
            values = {k: str(v) for k, v in self.counters.items()}
            values["input_rate_hz"] = f"{self._input_rate.rate(now):.2f}"
            values["keyframe_rate_hz"] = f"{self._keyframe_rate.rate(now):.2f}"
            values.update({f"bad_input.{k}": str(v) for k, v in self.bad_inputs.items()})
            bad_total = sum(self.bad_inputs.values())
        for stage in STAGES:
            p = self.percentiles(stage)
            if p is not None:
                values[f"latency_ms.{stage}.p50"] = f"{p[0]:.3f}"
                values[f"latency_ms.{stage}.p95"] = f"{p[1]:.3f}"
        values.update(extra)
        dropped, failed = int(values["frames_dropped"]), int(values["frames_failed"])
        problems = list(warnings)
        if dropped or bad_total or failed:
            problems.append(f"{dropped} frames dropped (model slower than camera), {bad_total} bad inputs"
                            + (f", {failed} frames failed in the detector" if failed else ""))
        if int(values["autosave_failures"]):
            problems.append(f"{values['autosave_failures']} autosaves failed")
        level, message = DiagnosticStatus.OK, "running"
        if problems:
            level, message = DiagnosticStatus.WARN, "; ".join(problems)
        status = DiagnosticStatus(level=level, name=name, message=message, hardware_id=hardware_id,
                                  values=[KeyValue(key=k, value=v) for k, v in values.items()])
        array = DiagnosticArray(status=[status])
        array.header.stamp = stamp
        return array
