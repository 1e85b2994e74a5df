"""The pose graph of a saved map, for ``vpr-ros map optimize`` and ``vpr-ros map export``.

Nodes are the map's keyframes with an odometry pose, grouped by (robot, session) in keyframe-id order;
each session's odometry poses are in that session's own odometry frame. Edges, with the noise model of
``core/geometry/pose_graph.py`` (``pose_graph_edges``, so the export and the optimiser use the same
numbers): odometry ``T_i^-1 T_i+1`` between consecutive keyframes of one session, and one edge per
stored loop whose two keyframes are nodes (from = match, to = query, the measured ``T_match_query``
with its covariance; a monocular loop keeps its rotation and leaves the translation to odometry; an
appearance-only loop is "same place": identity with the large same-place covariance). Loops naming a
keyframe without a pose (or one the map lacks) are skipped and counted.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import numpy.typing as npt

from vpr_ros.core.geometry.pose_graph import LoopEdge, PoseGraphOptions, pose_graph_edges
from vpr_ros.core.map.map_poses import PoseKey, frame_session, pose_key
from vpr_ros.core.types import Keyframe, LoopClosure

__all__ = ["MapGraph", "map_graph", "loop_kind"]

F64 = npt.NDArray[np.float64]
#: (from, to, T_from_to (4, 4), covariance (6, 6) ROS order)
Edge = tuple[int, int, F64, F64]


def loop_kind(lp: LoopClosure) -> str:
    """How a loop enters the graph: "measured", "rotation_only" (unknown scale) or "same_place"."""
    if lp.relative_pose is None:
        return "same_place"
    return "measured" if lp.translation_scale_known else "rotation_only"


@dataclasses.dataclass
class MapGraph:
    """keys[i], stamps[i], odometry[i] (4, 4), session[i] (index into sessions) of node i; frame: the
    session index of the map frame (-1 if it has no posed keyframe); odometry_edges, loop_edges (Edge
    tuples) and, per loop edge, loop_index (position in the map's loops) and loops (LoopEdge, node
    indices); loops_skipped: loops not in the graph."""

    keys: list[PoseKey]
    stamps: list[int]
    odometry: F64
    session: list[int]
    sessions: list[tuple[str, str]]
    frame: int
    odometry_edges: list[Edge]
    loop_edges: list[Edge]
    loops: list[LoopEdge]
    loop_index: list[int]
    loops_skipped: int

    @property
    def node(self) -> dict[PoseKey, int]:
        return {k: i for i, k in enumerate(self.keys)}


def map_graph(keyframes: Sequence[Keyframe], loops: Sequence[LoopClosure],
              options: PoseGraphOptions | None = None) -> MapGraph:
    """The graph of a map's keyframes and loops (see the module docstring)."""
    options = options or PoseGraphOptions()
    frame = frame_session(keyframes)
    by_session: dict[tuple[str, str], list[Keyframe]] = {}
    for kf in keyframes:
        if kf.pose is not None:
            by_session.setdefault((kf.robot_id, kf.session_id), []).append(kf)
    names = sorted(by_session, key=lambda s: (s != frame, s))  # the map-frame session first
    keys, stamps, poses, session, odo_edges = [], [], [], [], []
    for s, name in enumerate(names):
        stream = sorted(by_session[name], key=lambda kf: int(kf.id))
        start = len(keys)
        keys += [pose_key(kf) for kf in stream]
        stamps += [int(kf.stamp_ns) for kf in stream]
        poses += [np.asarray(kf.pose, np.float64) for kf in stream]
        session += [s] * len(stream)
        odo_edges += [(start + i, start + j, T, C)
                      for i, j, T, C in pose_graph_edges(np.stack(poses[start:]), [], options)]
    odometry = np.stack(poses) if poses else np.zeros((0, 4, 4))
    node = {k: i for i, k in enumerate(keys)}
    edges, index = [], []
    for n, lp in enumerate(loops):
        q = node.get((lp.query_robot_id, lp.query_session_id, int(lp.query_id)))
        m = node.get((lp.match_robot_id, lp.match_session_id, int(lp.match_id)))
        if q is not None and m is not None and q != m:
            edges.append(LoopEdge(q, m, lp.relative_pose, lp.covariance, bool(lp.translation_scale_known)))
            index.append(n)
    loop_edges = pose_graph_edges(odometry, edges, options)[len(keys) - 1:] if edges else []
    return MapGraph(keys, stamps, odometry, session, names, 0 if names and names[0] == frame else -1,
                    odo_edges, loop_edges, edges, index, len(loops) - len(edges))
