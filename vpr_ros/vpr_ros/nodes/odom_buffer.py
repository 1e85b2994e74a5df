"""Odometry poses by stamp for the node's frames: wait briefly for the odometry of an image, interpolate.

ROS-free (poses are (4, 4) world_T_body arrays, stamps integer nanoseconds), so it is tested without
DDS. Drivers publish the odometry of an instant a little after the image of that instant (a camera
and odometry both at 10-30 Hz with the same stamps: the odometry message arrives a few ms later). An
image processed at once would find only the odometry of the previous instant: a pose one period old,
or none at all when that period exceeds ``odom.max_age_sec``. So :meth:`OdomBuffer.pose_at`:

1. waits, on the processing thread, at most ``odom.wait_sec`` for odometry stamped at or after the
   image, but only while odometry flows (its newest stamp within ``_FLOWING_SEC`` +
   ``odom.max_age_sec`` of the image): a robot without odometry never slows the frames down;
2. takes the pose stamped exactly at the image, else interpolates between the two poses around the
   image stamp (translation linearly, rotation by slerp) when both are within ``odom.max_age_sec``
   of it, else the nearer pose within ``odom.max_age_sec``, else none;
3. counts what happened: ``odom_missing`` (a frame processed without a pose although odometry is
   enabled), ``odom_interpolated`` and ``odom_waited`` (frames that waited for their odometry).
"""

from __future__ import annotations

import bisect
import threading
import time
from typing import Callable

import numpy as np
import numpy.typing as npt

from vpr_ros.io.poses import interpolate_pose

__all__ = ["OdomBuffer", "ODOM_COUNTERS"]

#: Diagnostics counters of the odometry lookup (all start at 0 when odom.enabled).
ODOM_COUNTERS = ("odom_missing", "odom_interpolated", "odom_waited")

#: Odometry whose newest stamp is this much (plus odom.max_age_sec) older than the image has stopped:
#: no waiting for it.
_FLOWING_SEC = 1.0

Pose = npt.NDArray[np.float64]


class OdomBuffer:
    """The last ``size`` odometry poses in stamp order; thread-safe (callbacks add, the processing
    thread looks up). count: the node's counter (``NodeStats.count``) or None."""

    def __init__(self, max_age_sec: float, wait_sec: float, size: int = 400,
                 count: Callable[[str], None] | None = None) -> None:
        self.max_age_ns = int(round(max_age_sec * 1e9))
        self.wait_sec = wait_sec
        self.size = size
        self._count = count or (lambda key: None)
        self._cond = threading.Condition()
        self._stamps: list[int] = []
        self._poses: list[Pose] = []

    def __len__(self) -> int:
        with self._cond:
            return len(self._stamps)

    def add(self, stamp_ns: int, pose: Pose) -> None:
        """One odometry pose (out-of-order stamps are put in their place; a repeated stamp replaces)."""
        with self._cond:
            i = bisect.bisect_left(self._stamps, stamp_ns)
            if i < len(self._stamps) and self._stamps[i] == stamp_ns:
                self._poses[i] = pose
            else:
                self._stamps.insert(i, stamp_ns)
                self._poses.insert(i, pose)
                if len(self._stamps) > self.size:
                    del self._stamps[0], self._poses[0]
            self._cond.notify_all()

    def clear(self) -> None:
        with self._cond:
            self._stamps.clear()
            self._poses.clear()

    def pose_at(self, stamp_ns: int) -> Pose | None:
        """The pose of the body at ``stamp_ns`` (see the module docstring), counted."""
        deadline = time.monotonic() + self.wait_sec
        waited = False
        with self._cond:
            while self._should_wait(stamp_ns):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                waited = True
                self._cond.wait(remaining)
            pose, interpolated = self._lookup(stamp_ns)
        if waited:
            self._count("odom_waited")
        if pose is None:
            self._count("odom_missing")
        elif interpolated:
            self._count("odom_interpolated")
        return pose

    def _should_wait(self, stamp_ns: int) -> bool:
        if not self._stamps or self._stamps[-1] >= stamp_ns:
            return False  # no odometry at all, or the image's own odometry (or later) is here
        return stamp_ns - self._stamps[-1] <= int(_FLOWING_SEC * 1e9) + self.max_age_ns

    def _lookup(self, stamp_ns: int) -> tuple[Pose | None, bool]:
        stamps, i = self._stamps, bisect.bisect_left(self._stamps, stamp_ns)
        if i < len(stamps) and stamps[i] == stamp_ns:
            return self._poses[i], False
        before = i - 1 if i > 0 else None
        after = i if i < len(stamps) else None
        near_before = before is not None and stamp_ns - stamps[before] <= self.max_age_ns
        near_after = after is not None and stamps[after] - stamp_ns <= self.max_age_ns
        if near_before and near_after:
            assert before is not None and after is not None
            w = (stamp_ns - stamps[before]) / (stamps[after] - stamps[before])
            return interpolate_pose(self._poses[before], self._poses[after], w), True
        if near_before:
            assert before is not None
            return self._poses[before], False
        if near_after:
            assert after is not None
            return self._poses[after], False
        return None, False
