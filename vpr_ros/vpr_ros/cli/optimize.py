"""The ``--optimize`` step of ``vpr-ros replay`` and ``vpr-ros demo``: pose graph of the replayed stream.

Builds a GTSAM pose graph from the keyframes of the replayed robot and session that have odometry
(consecutive keyframes joined by odometry) and the loops between them (``core/geometry/pose_graph.py``),
optimises it robustly, and writes into the replay's output folder:

* ``metrics.json`` gains ``ate_before_m`` / ``ate_after_m`` (null without a ground truth),
  ``ate_alignment``, ``ate_ground_truth`` (what the ground truth is, e.g. "simulated") and ``pose_graph``;
* ``trajectory_optimized.png``: the trajectory before/after with the loop edges;
* ``pose_graph.g2o`` (odometry poses + every edge with its information matrix),
  ``keyframes_odometry.tum``, ``keyframes_optimized.tum`` (and ``ground_truth.tum`` when given).

Loops with a keyframe of another robot or session are left out (their poses live in another
odometry frame) and counted in ``pose_graph.loops_skipped``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import numpy.typing as npt
from matplotlib.figure import Figure

from vpr_ros.core.eval import loop_class
from vpr_ros.core.eval.trajectory import absolute_trajectory_error
from vpr_ros.core.geometry.live_pose_graph import pose_graph_options
from vpr_ros.core.geometry.pose_graph import LoopEdge, PoseGraphOptions, PoseGraphResult, optimize_pose_graph, pose_graph_edges
from vpr_ros.core.types import Keyframe, LoopClosure
from vpr_ros.io.trajectory_export import write_g2o, write_tum

__all__ = ["optimize_stream", "run_optimize_step", "format_optimize_summary"]

logger = logging.getLogger(__name__)
F64 = npt.NDArray[np.float64]


def _loop_edges(loops: Sequence[LoopClosure], node: Mapping[tuple[str, str, int], int]) -> tuple[list[LoopEdge], int]:
    edges, skipped = [], 0
    for lc in loops:
        q = node.get((lc.query_robot_id, lc.query_session_id, lc.query_id))
        m = node.get((lc.match_robot_id, lc.match_session_id, lc.match_id))
        if q is None or m is None or q == m:
            skipped += 1
            continue
        edges.append(LoopEdge(q, m, lc.relative_pose, lc.covariance,
                              bool(getattr(lc, "translation_scale_known", True))))
    return edges, skipped


def optimize_stream(out: str | Path, keyframes: Sequence[Keyframe], loops: Sequence[LoopClosure], *,
                    robot_id: str, session_id: str, ground_truth: Mapping[int, F64] | None = None,
                    ground_truth_label: str = "ground truth", options: PoseGraphOptions | None = None,
                    data_label: str = "") -> dict[str, Any]:
    """Optimise the pose graph of stream (robot_id, session_id) and write the outputs into ``out``.

    ground_truth: keyframe id -> (4, 4) world_T_body (every keyframe of the stream), or None.
    data_label: what is simulated about the data ("SIMULATED odometry"), leads the plot's title.
    Returns the metrics added to ``out/metrics.json``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    own = sorted((kf for kf in keyframes if kf.robot_id == robot_id and kf.session_id == session_id
                  and kf.pose is not None), key=lambda kf: kf.id)
    if len(own) < 3:
        logger.warning("--optimize: only %d keyframes of %s/%s have poses; give odometry "
                       "(--odom-topic) to build a pose graph", len(own), robot_id, session_id)
        return {"ate_before_m": None, "ate_after_m": None, "pose_graph": None}
    node = {(kf.robot_id, kf.session_id, kf.id): i for i, kf in enumerate(own)}
    odometry = np.stack([kf.pose for kf in own])
    edges, skipped = _loop_edges(loops, node)
    options = options or PoseGraphOptions()
    result = optimize_pose_graph(odometry, edges, options)
    stamps = [kf.stamp_ns for kf in own]
    files = {"g2o": write_g2o(out / "pose_graph.g2o", odometry, pose_graph_edges(odometry, edges, options)).name,
             "tum_odometry": write_tum(out / "keyframes_odometry.tum", stamps, odometry).name,
             "tum_optimized": write_tum(out / "keyframes_optimized.tum", stamps, result.poses).name}
    metrics: dict[str, Any] = {"ate_before_m": None, "ate_after_m": None, "ate_alignment": None,
                               "ate_ground_truth": None}
    gt = None
    if ground_truth is not None:
        gt = np.stack([ground_truth[kf.id] for kf in own])
        files["tum_ground_truth"] = write_tum(out / "ground_truth.tum", stamps, gt).name
        before = absolute_trajectory_error(gt, odometry)
        after = absolute_trajectory_error(gt, result.poses)
        metrics.update(ate_before_m=before.rmse_m, ate_after_m=after.rmse_m, ate_alignment=before.alignment,
                       ate_ground_truth=ground_truth_label)
        plot_before, plot_after = before.aligned, after.aligned
    else:
        plot_before, plot_after = odometry, result.poses
    files["plot"] = _plot(out / "trajectory_optimized.png", gt, plot_before, plot_after, edges, result,
                          ground_truth_label, data_label).name
    metrics["pose_graph"] = {
        "keyframes": len(own), "odometry_edges": len(own) - 1, "loop_edges": len(edges),
        "loops_skipped": skipped, "loops_rejected_by_optimizer": result.loops_rejected,
        "robust": options.robust, "optimize_ms": result.time_ms,
        "initial_error": result.initial_error, "final_error": result.final_error, "files": files}
    _merge_metrics(out / "metrics.json", metrics)
    return metrics


def _merge_metrics(path: Path, new: Mapping[str, Any]) -> None:
    existing = json.loads(path.read_text()) if path.exists() else {}
    existing.update(new)
    path.write_text(json.dumps(existing, indent=2))


def _plot(path: Path, gt: F64 | None, before: F64, after: F64, edges: Sequence[LoopEdge],
          result: PoseGraphResult, gt_label: str, data_label: str = "") -> Path:
    fig = Figure(figsize=(11, 4.8))
    ax0 = fig.add_subplot(1, 2, 1)
    ax1 = fig.add_subplot(1, 2, 2, sharex=ax0, sharey=ax0)  # same scale: the drift removed is visible
    kept_c, down_c = loop_class.COLOURS[loop_class.CORRECT], loop_class.COLOURS[loop_class.REJECTED]
    for ax, poses, title, what in ((ax0, before, "before: odometry", "keyframe poses (odometry)"),
                                   (ax1, after, "after: pose graph optimised", "keyframe poses (optimised)")):
        if gt is not None:
            ax.plot(*_path_xy(gt), color="0.6", lw=3, label=gt_label)
        ax.plot(*_path_xy(poses), ".-", color="tab:blue", ms=2, lw=1, label=what)
        for k, e in enumerate(edges):
            kept = result.loop_weights[k] >= 0.5
            ax.plot([poses[e.match, 0, 3], poses[e.query, 0, 3]], [poses[e.match, 1, 3], poses[e.query, 1, 3]],
                    color=kept_c if kept else down_c, lw=0.6, alpha=0.7)
        ax.plot([], [], color=kept_c, label="loop closure (kept by the optimiser)")
        ax.plot([], [], color=down_c, label="loop closure (rejected: down-weighted below 0.5)")
        ax.set_title(title)
        ax.set_xlabel("x [m]")
        ax.set_ylabel("y [m]")
        ax.legend(fontsize=7, loc="best")
    title = f"keyframe trajectory vs {gt_label} (aligned, SE(3))" if gt is not None else "keyframe trajectory"
    fig.suptitle(f"{data_label}: {title}" if data_label else title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def _path_xy(poses: F64) -> tuple[F64, F64]:
    """x, y of the keyframe path, broken (NaN) at jumps far longer than a typical step, e.g. an
    unfilmed stretch between two traversals, which a straight line would misdraw."""
    xy = poses[:, :2, 3].astype(np.float64)
    steps = np.linalg.norm(np.diff(xy, axis=0), axis=1)
    jumps = np.flatnonzero(steps > 10 * max(float(np.median(steps)), 1e-9)) + 1
    xy = np.insert(xy, jumps, np.nan, axis=0)
    return xy[:, 0], xy[:, 1]


def format_optimize_summary(metrics: Mapping[str, Any]) -> str:
    """Human-readable lines about the optimisation."""
    graph = metrics.get("pose_graph")
    if not graph:
        return "pose graph: not built (no keyframes with odometry)"
    lines = [f"pose graph: {graph['keyframes']} keyframes, {graph['loop_edges']} loops "
             f"({graph['loops_rejected_by_optimizer']} down-weighted below 0.5 by {graph['robust']}, "
             f"{graph['loops_skipped']} across sessions skipped), optimised in {graph['optimize_ms']:.0f} ms"]
    if metrics.get("ate_before_m") is not None:
        lines.append(f"ATE vs {metrics['ate_ground_truth']} ({metrics['ate_alignment']}): before "
                     f"{metrics['ate_before_m']:.3f} m, after {metrics['ate_after_m']:.3f} m "
                     f"({metrics['ate_before_m'] / max(metrics['ate_after_m'], 1e-12):.1f}x lower)")
    return "\n".join(lines)


def run_optimize_step(out: str | Path, detector: Any, loops: Sequence[LoopClosure]) -> dict[str, Any]:
    """``replay --optimize``: the pose graph of the detector's own stream, without a ground truth."""
    det = detector.config.detector
    metrics = optimize_stream(out, detector.keyframes, loops, robot_id=det.robot_id, session_id=det.session_id,
                              options=pose_graph_options(detector.config.pose_graph))
    print(format_optimize_summary(metrics))
    return metrics
