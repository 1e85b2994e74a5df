"""Keyframes and loop closures as ``visualization_msgs/MarkerArray`` for RViz / Foxglove.

A pure function of core data (no node state), so the node publishes it when odometry is available
and tests check it without DDS. Markers, in namespace ``ns``:

* id 0, ``DELETEALL`` first, so a republished array replaces the previous one (fewer loops after a
  reset leave no stale lines behind);
* ``<ns>/keyframes`` (id 1): one ``SPHERE_LIST`` of keyframe positions;
* ``<ns>/loops`` (id 2): one ``LINE_LIST`` query -> match per loop, coloured per vertex by the one
  colour code of loops (core/eval/loop_class.py, also used by the HTML report and the plots):
  green = correct, orange = suspect (MNN count close to ``verify.min_matches``, or geometry found no
  valid pose), red = rejected (by geometry, odometry or the optimiser; optional input).

Every marker is in the frame of the odometry the keyframe positions came from (the
``header.frame_id`` of the ``nav_msgs/Odometry`` messages, :meth:`MarkerTrail.odometry_frame`), so
keyframes and the loop edges between them sit where the odometry put them.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import threading

import numpy as np
import numpy.typing as npt
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray

from vpr_ros.core.eval import loop_class
from vpr_ros.core.types import Keyframe, LoopClosure

__all__ = ["loop_closure_markers", "LOOP_COLOURS", "KeyframeKey", "MarkerTrail"]

KeyframeKey = tuple[str, str, int]  # (robot_id, session_id, keyframe id)
LOOP_COLOURS = loop_class.COLOURS  # per class: correct, suspect, rejected


def _stamp(stamp_ns: int) -> Time:
    return Time(sec=int(stamp_ns // 1_000_000_000), nanosec=int(stamp_ns % 1_000_000_000))


def _point(p: npt.ArrayLike) -> Point:
    x, y, z = (float(v) for v in np.asarray(p, np.float64)[:3])
    return Point(x=x, y=y, z=z)


def _marker(kind: int, marker_id: int, ns: str, frame_id: str, stamp_ns: int) -> Marker:
    m = Marker(type=kind, id=marker_id, ns=ns, action=Marker.ADD)
    m.header.frame_id = frame_id
    m.header.stamp = _stamp(stamp_ns)
    m.pose.orientation.w = 1.0
    return m


def loop_closure_markers(positions: Mapping[KeyframeKey, npt.ArrayLike], loops: Sequence[LoopClosure], *,
                         frame_id: str, stamp_ns: int, rejected: Sequence[LoopClosure] = (),
                         ns: str = "vpr_ros", keyframe_size_m: float = 0.2, line_width_m: float = 0.05,
                         min_matches: int = loop_class.DEFAULT_MIN_MATCHES) -> MarkerArray:
    """MarkerArray of keyframe ``positions`` ((3,) metres in ``frame_id``) and loop edges.

    Loops whose query or match has no position (another robot's keyframe, no odometry) are left out.
    """
    clear = Marker(action=Marker.DELETEALL, id=0, ns=ns)
    clear.header.frame_id = frame_id
    clear.header.stamp = _stamp(stamp_ns)
    keyframes = _marker(Marker.SPHERE_LIST, 1, f"{ns}/keyframes", frame_id, stamp_ns)
    keyframes.scale.x = keyframes.scale.y = keyframes.scale.z = float(keyframe_size_m)
    keyframes.color = ColorRGBA(r=0.2, g=0.4, b=1.0, a=0.9)
    keyframes.points = [_point(p) for p in positions.values()]
    edges = _marker(Marker.LINE_LIST, 2, f"{ns}/loops", frame_id, stamp_ns)
    edges.scale.x = float(line_width_m)
    edges.color = ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0)  # per-vertex colours below take precedence
    for lc, was_rejected in [(lc, False) for lc in loops] + [(lc, True) for lc in rejected]:
        q = positions.get((lc.query_robot_id, lc.query_session_id, lc.query_id))
        m = positions.get((lc.match_robot_id, lc.match_session_id, lc.match_id))
        if q is None or m is None:
            continue
        r, g, b, a = LOOP_COLOURS[loop_class.classify(lc, min_matches, rejected=was_rejected)]
        edges.points += [_point(q), _point(m)]
        edges.colors += [ColorRGBA(r=r, g=g, b=b, a=a)] * 2
    return MarkerArray(markers=[clear, keyframes, edges])


class MarkerTrail:
    """The node's RViz/Foxglove view: keyframe positions (from odometry) and accepted loops so far.

    ``add`` runs on the processing thread, ``message`` on the diagnostics timer; a lock keeps them
    apart. ``message`` returns None while nothing changed or no keyframe has a pose (no odometry).
    """

    def __init__(self, min_matches: int = loop_class.DEFAULT_MIN_MATCHES) -> None:
        self._lock = threading.Lock()
        self._min_matches = min_matches
        self._odom_frame = ""  # header.frame_id of the odometry the positions come from
        self._positions: dict[KeyframeKey, npt.NDArray[np.float64]] = {}
        self._loops: list[LoopClosure] = []
        self._changed = False

    def add(self, keyframe: Keyframe, loops: Sequence[LoopClosure]) -> None:
        with self._lock:
            if keyframe.pose is not None:
                self._positions[(keyframe.robot_id, keyframe.session_id, keyframe.id)] = keyframe.pose[:3, 3].copy()
                self._changed = True
            self._loops.extend(loops)
            self._changed = self._changed or bool(loops)

    def odometry_frame(self, frame_id: str) -> None:
        """The frame of the odometry messages (their header.frame_id): the markers' frame."""
        with self._lock:
            self._changed = self._changed or (bool(frame_id) and frame_id != self._odom_frame)
            self._odom_frame = frame_id or self._odom_frame

    def clear(self) -> None:
        with self._lock:
            self._positions.clear()
            self._loops.clear()
            self._changed = True

    def message(self, frame_id: str, stamp_ns: int) -> MarkerArray | None:
        """The markers, in the odometry's frame; ``frame_id`` only while no odometry named one."""
        with self._lock:
            if not self._changed or not self._positions:
                return None
            self._changed = False
            return loop_closure_markers(dict(self._positions), list(self._loops),
                                        frame_id=self._odom_frame or frame_id, stamp_ns=stamp_ns,
                                        min_matches=self._min_matches)
