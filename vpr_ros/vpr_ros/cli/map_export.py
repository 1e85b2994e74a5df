"""``vpr-ros map export``: a map's keyframes, loops and pose graph as CSV and g2o.

* ``keyframes.csv``: one row per keyframe: identity, stamp, its g2o vertex (-1 without a pose), the
  odometry pose (x y z qx qy qz qw, in its session's odometry frame) and, when the map holds one, the
  optimised pose (``opt_x`` .. ``opt_qw``, in the map frame) with ``pose_source``;
* ``loops.csv``: one row per stored loop (the LoopClosure fields, its measured pose), with the g2o edge
  it became (``g2o_edge``, -1 if skipped) and how (``g2o_measurement``: measured, rotation_only,
  same_place, or skipped: a keyframe without a pose);
* ``loops.g2o``: the map's pose graph (cli/map_graph.py, the graph ``vpr-ros map optimize`` solves).
  ``VERTEX_SE3:QUAT`` per keyframe with a pose, at its optimised pose when stored, else its odometry
  pose; then ``EDGE_SE3:QUAT`` odometry edges between consecutive keyframes of each session; then one
  edge per loop (from = match, to = query). Information = inverse covariance, upper triangle, order
  x y z r1 r2 r3, for the reader ``--g2o-information`` names (io/trajectory_export.py): ``gtsam``
  (default) with the rotation error as a rotation vector, what GTSAM ``readG2o`` and Ceres'
  ``pose_graph_3d`` read; ``g2o`` for g2o's own ``EdgeSE3``, which measures the rotation error as the
  quaternion's vector part (about half the rotation vector), so the rotation block is 4x and the
  rotation-translation blocks 2x (docs/map_tools.md).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from vpr_ros.cli.map_access import MapData
from vpr_ros.cli.map_graph import loop_kind, map_graph
from vpr_ros.core.map.map_poses import pose_key
from vpr_ros.core.types import LoopClosure
from vpr_ros.io.poses import matrix_to_pose
from vpr_ros.io.trajectory_export import G2O_INFORMATION, write_g2o

__all__ = ["export_map", "G2O_INFORMATION"]

_POSE = ["x", "y", "z", "qx", "qy", "qz", "qw"]


def _fields(T: np.ndarray | None) -> list[str]:
    if T is None:
        return [""] * 7
    (x, y, z), q = matrix_to_pose(np.asarray(T, np.float64))
    return [f"{c:.9g}" for c in (x, y, z, *q)]


def export_map(data: MapData, keyframes_csv: Path, loops_csv: Path, loops_g2o: Path,
               information: str = "gtsam") -> dict[str, int]:
    """Write the three files; returns counts for the summary line (vertices, optimised vertices,
    odometry edges, loop edges by kind, loops skipped). ``information``: the g2o reader whose
    information convention ``loops.g2o`` follows (one of :data:`G2O_INFORMATION`)."""
    graph = map_graph(data.keyframes, data.loops)
    node = graph.node
    vertices = [data.optimized[k].T_map_base if k in data.optimized else T for k, T in zip(graph.keys, graph.odometry)]
    with open(keyframes_csv, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["key", "robot_id", "session_id", "keyframe_id", "stamp_ns", "g2o_vertex", *_POSE, "pose_source",
                    *("opt_" + p for p in _POSE)])
        for key, kf in enumerate(data.keyframes):
            ident = pose_key(kf)
            opt = data.optimized.get(ident)
            source = "optimized" if opt is not None else "odometry" if kf.pose is not None else ""
            w.writerow([key, kf.robot_id, kf.session_id, kf.id, kf.stamp_ns, node.get(ident, -1), *_fields(kf.pose),
                        source, *_fields(None if opt is None else opt.T_map_base)])
    # Edges whose covariance cannot be inverted (a damaged or degenerate loop) are skipped, not fatal.
    usable = [bool(np.linalg.eigvalsh((C + C.T) / 2).min() > 0) for _, _, _, C in graph.loop_edges]
    edge_of, line = {}, len(graph.odometry_edges)
    for n, ok in zip(graph.loop_index, usable):
        if ok:
            edge_of[n], line = line, line + 1
    counts = {"vertices": len(vertices), "optimized": sum(k in data.optimized for k in graph.keys),
              "odometry_edges": len(graph.odometry_edges), "measured": 0, "rotation_only": 0, "same_place": 0,
              "skipped": 0}
    with open(loops_csv, "w", newline="") as f:
        w = csv.writer(f)
        scalar = [n for n in LoopClosure.__dataclass_fields__ if n not in ("relative_pose", "covariance")]
        w.writerow(scalar + _POSE + ["g2o_edge", "g2o_measurement"])
        for n, lp in enumerate(data.loops):
            kind = loop_kind(lp) if n in edge_of else "skipped"
            counts[kind] += 1
            w.writerow([getattr(lp, name) for name in scalar] + _fields(lp.relative_pose) + [edge_of.get(n, -1), kind])
    edges = graph.odometry_edges + [e for e, ok in zip(graph.loop_edges, usable) if ok]
    write_g2o(loops_g2o, vertices, edges, information)
    return counts
