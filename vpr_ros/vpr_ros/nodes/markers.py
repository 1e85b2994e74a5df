"""Keyframes and loop closures as ``visualization_msgs/MarkerArray`` for RViz / Foxglove.

A pure function of core data (no node state), so the node publishes it when odometry is available
and tests check it without DDS. Markers, in namespace ``ns``:

* id 0, ``DELETEALL`` first, so a republished array replaces the previous one (fewer loops after a
  reset leave no stale lines behind);
* ``<ns>/keyframes`` (id 1): one ``SPHERE_LIST`` of keyframe positions;
* ``<ns>/loops`` (id 2): one ``LINE_LIST`` query -> match per loop, coloured per vertex by how it was
  verified: green = with a measured relative pose, yellow = appearance only (same place, no pose),
  red = rejected (by geometry, odometry or the optimiser; optional input).
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

from vpr_ros.core.types import Keyframe, LoopClosure

__all__ = ["loop_closure_markers", "LOOP_COLOURS", "KeyframeKey", "MarkerTrail"]

KeyframeKey = tuple[str, str, int]  # (robot_id, session_id, keyframe id)
LOOP_COLOURS = {"pose": (0.1, 0.8, 0.2, 1.0), "appearance": (1.0, 0.85, 0.1, 1.0),
                "rejected": (0.9, 0.1, 0.1, 1.0)}


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
                         ns: str = "vpr_ros", keyframe_size_m: float = 0.2,
                         line_width_m: float = 0.05) -> MarkerArray:
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
        kind = "rejected" if was_rejected else ("pose" if lc.relative_pose_valid else "appearance")
        r, g, b, a = LOOP_COLOURS[kind]
        edges.points += [_point(q), _point(m)]
        edges.colors += [ColorRGBA(r=r, g=g, b=b, a=a)] * 2
    return MarkerArray(markers=[clear, keyframes, edges])


class MarkerTrail:
    """The node's RViz/Foxglove view: keyframe positions (from odometry) and accepted loops so far.

    ``add`` runs on the processing thread, ``message`` on the diagnostics timer; a lock keeps them
    apart. ``message`` returns None while nothing changed or no keyframe has a pose (no odometry).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
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

    def clear(self) -> None:
        with self._lock:
            self._positions.clear()
            self._loops.clear()
            self._changed = True

    def message(self, frame_id: str, stamp_ns: int) -> MarkerArray | None:
        with self._lock:
            if not self._changed or not self._positions:
                return None
            self._changed = False
            return loop_closure_markers(dict(self._positions), list(self._loops), frame_id=frame_id,
                                        stamp_ns=stamp_ns)
