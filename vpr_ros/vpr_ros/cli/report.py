"""The output folder of a replay: LoopClosure bag, CSVs, ``metrics.json`` and plots.

Files: ``loop_closures/`` (rosbag2, mcap, ``vpr_ros_msgs/msg/LoopClosure``), ``loop_closures.csv``,
``queries.csv`` (per keyframe: best verified candidate and whether it is a true loop, for tuning
thresholds), ``pr_curve.csv``, ``metrics.json``, ``pr_curve.png`` and, when poses exist,
``trajectory.png`` with the loop edges.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from vpr_ros.cli.session import ReplayResult
from vpr_ros.core.eval import loop_class
from vpr_ros.core.eval.groundtruth import GroundTruth
from vpr_ros.core.eval.metrics import (PRCurve, average_precision, latency_stats,
                                       max_recall_at_full_precision, pr_curve, precision_recall_f1,
                                       recall_at_n)
from vpr_ros.core.types import LoopClosure
from vpr_ros.io.bag_writer import write_loop_closures
from vpr_ros.io.output_files import atomic_files
from vpr_ros.io.poses import matrix_to_pose

__all__ = ["evaluate", "write_report", "geometry_metrics", "POSE_COLUMNS", "REPORT_FILES"]

#: the files next to the bag, each written whole or not at all (io/output_files.py)
REPORT_FILES = ("loop_closures.csv", "queries.csv", "pr_curve.csv", "pr_curve.png", "trajectory.png", "metrics.json")

#: loop_closures.csv columns of the relative pose T_match_query (query body in the match body frame):
#: translation (metres, or a unit direction when translation_scale_known is 0), quaternion, and the
#: standard deviations of the covariance's diagonal (m, deg); empty when relative_pose_valid is 0.
POSE_COLUMNS = ["relative_pose_valid", "translation_scale_known", "geometry_method", "geometry_rejection",
                "geometric_inliers", "t_x", "t_y", "t_z", "q_x", "q_y", "q_z", "q_w",
                "std_x_m", "std_y_m", "std_z_m", "std_rot_x_deg", "std_rot_y_deg", "std_rot_z_deg"]


def geometry_metrics(result: ReplayResult) -> dict[str, Any]:
    """Relative-pose counts: loops published with a valid pose (and metric scale), and accepted loops
    whose pose was not valid, by reason (published without a pose or dropped, ``geometry.on_invalid``)."""
    valid = [lc for lc in result.loop_closures if lc.relative_pose_valid]
    return {
        "geometry_valid": len(valid),
        "geometry_valid_metric": sum(lc.translation_scale_known for lc in valid),
        "geometry_rejected": dict(sorted(result.geometry_rejections.items())),
        "geometry_methods": {m: sum(lc.geometry_method == m for lc in valid)
                             for m in sorted({lc.geometry_method for lc in valid})},
        "frames_without_depth": result.stats.frames_without_depth,
        "frames_without_right": result.stats.frames_without_right,
    }


def _pose_cells(lc: LoopClosure) -> list[Any]:
    head = [int(lc.relative_pose_valid), int(lc.translation_scale_known), lc.geometry_method,
            lc.geometry_rejection, lc.geometric_inliers]
    if lc.relative_pose is None:
        return head + [""] * (len(POSE_COLUMNS) - len(head))
    (x, y, z), quat = matrix_to_pose(lc.relative_pose)
    std = np.sqrt(np.clip(np.diag(lc.covariance), 0, None)) if lc.covariance is not None else np.full(6, np.nan)
    std[3:] = np.degrees(std[3:])
    return head + [f"{v:.6f}" for v in (x, y, z, *quat)] + [f"{v:.6g}" for v in std]


def evaluate(result: ReplayResult, gt: GroundTruth | None) -> tuple[dict[str, Any], PRCurve | None,
                                                                     list[bool | None]]:
    """Metrics of a replay; returns (metrics, PR curve or None, per-loop correctness).

    Operating point: the published loop closures. Recall: queries with a true loop in the map at
    their time that got at least one correct published loop. PR curve: each query's best verified
    candidate, swept over its verification score.
    """
    metrics: dict[str, Any] = {
        "model_id": result.model_id,
        "num_frames": result.num_frames,
        "num_keyframes": len(result.outcomes),
        "num_map_keyframes": result.num_map_keyframes,
        "num_loop_closures": len(result.loop_closures),
        "odometry_rejected": result.odometry_rejected,
        "text_rule": dict(result.text_rule),  # core/text/rule.py COUNTERS; {} when text.rule is off
        "corrupt_messages": result.stats.corrupt,
        "corrupt_examples": result.stats.corrupt_examples,
        "stamps_backwards_skipped": result.stamps_backwards,
        "stamps_backwards_examples": result.stamps_backwards_examples,
        # a damaged MCAP bag read as far as it goes (io/mcap_salvage.py)
        "bag_salvaged": result.stats.salvaged,
        "bag_unreadable_bytes": result.stats.lost_bytes,
        "bag_lost_messages": result.stats.lost_messages,
        "latency_ms": latency_stats(result.timings_ms),
        **geometry_metrics(result),
    }
    if gt is None:
        metrics.update({k: None for k in ("precision", "recall", "f1", "max_recall_at_100_precision",
                                          "auc", "true_positives", "false_positives")})
        return metrics, None, [None] * len(result.loop_closures)
    correct = []
    recalled = set()
    for lc in result.loop_closures:
        query = result.record((lc.query_robot_id, lc.query_session_id, lc.query_id))
        ok = gt.is_true(query, result.record((lc.match_robot_id, lc.match_session_id, lc.match_id)))
        correct.append(ok)
        if ok:
            recalled.add(query.key)
    positives, scores, hits, ranked = 0, [], [], []
    for outcome in result.outcomes:
        has = gt.has_true(outcome.record, result.records[:outcome.database_size])
        positives += has
        if outcome.candidates:
            scores.append(outcome.candidates[0].score)
            hits.append(gt.is_true(outcome.record, outcome.candidates[0].match))
        if has:
            by_rank = sorted(outcome.candidates, key=lambda c: c.rank)
            ranked.append([gt.is_true(outcome.record, c.match) for c in by_rank])
    tp = sum(correct)
    fp = len(correct) - tp
    precision, recall, f1 = precision_recall_f1(tp, fp, positives, recalled=len(recalled))
    curve = pr_curve(scores, hits, positives)
    reranked = sum(hits) / positives if positives else 0.0
    metrics.update({
        "precision": precision, "recall": recall, "f1": f1,
        "max_recall_at_100_precision": max_recall_at_full_precision(curve),
        "auc": average_precision(curve),
        "true_positives": tp, "false_positives": fp,
        "queries_with_true_loop": positives, "queries_recalled": len(recalled),
        "retrieval_recall_at_n": {str(n): v for n, v in recall_at_n(ranked, (1, 5, 10), positives).items()},
        "reranked_recall_at_1": reranked,
    })
    return metrics, curve, correct


def _write_csvs(out: dict[str, Path], result: ReplayResult, correct: list[bool | None], curve: PRCurve | None,
                gt: GroundTruth | None) -> None:
    with open(out["loop_closures.csv"], "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["query_session", "query_id", "query_stamp_ns", "query_frame", "match_session",
                    "match_id", "match_stamp_ns", "match_frame", "global_similarity", "retrieval_rank",
                    "local_matches", "local_features", "score", "consistent_keyframes", "correct",
                    *POSE_COLUMNS])
        for lc, ok in zip(result.loop_closures, correct):
            q = result.record((lc.query_robot_id, lc.query_session_id, lc.query_id))
            m = result.record((lc.match_robot_id, lc.match_session_id, lc.match_id))
            w.writerow([q.session_id, q.keyframe_id, q.stamp_ns, q.frame_index, m.session_id,
                        m.keyframe_id, m.stamp_ns, m.frame_index, f"{lc.global_similarity:.4f}",
                        lc.retrieval_rank, lc.local_matches, lc.local_features, f"{lc.score:.3f}",
                        lc.consistent_keyframes, "" if ok is None else int(ok), *_pose_cells(lc)])
    with open(out["queries.csv"], "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["query_id", "query_frame", "has_true_loop", "best_match_frame", "best_score",
                    "best_similarity", "best_rank", "best_correct"])
        for o in result.outcomes:
            has = None if gt is None else gt.has_true(o.record, result.records[:o.database_size])
            best = o.candidates[0] if o.candidates else None
            ok = None if gt is None or best is None else gt.is_true(o.record, best.match)
            w.writerow([o.record.keyframe_id, o.record.frame_index, "" if has is None else int(has),
                        "" if best is None else best.match.frame_index,
                        "" if best is None else f"{best.score:.3f}",
                        "" if best is None else f"{best.similarity:.4f}",
                        "" if best is None else best.rank, "" if ok is None else int(ok)])
    if curve is not None:
        with open(out["pr_curve.csv"], "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["threshold", "precision", "recall"])
            w.writerows(zip(curve.thresholds.tolist(), curve.precision.tolist(), curve.recall.tolist()))


def _titled(title: str, data_label: str) -> str:
    """``title``, led by what is simulated about the data (e.g. "SIMULATED odometry"), if anything."""
    return f"{data_label}: {title}" if data_label else title


def _plot_pr(path: Path, curve: PRCurve, metrics: dict[str, Any], data_label: str = "") -> Figure:
    fig = Figure(figsize=(5, 4), dpi=100)
    ax = fig.add_subplot()
    ax.step(np.r_[0.0, curve.recall], np.r_[1.0, curve.precision], where="post", label="best candidate")
    if metrics.get("precision") is not None:
        ax.plot([metrics["recall"]], [metrics["precision"]], "o", color="C3", label="operating point")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.02), ylim=(0, 1.02),
           title=_titled(f"AUC {metrics['auc']:.3f}, max R@P=1 {metrics['max_recall_at_100_precision']:.3f}",
                         data_label))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path)
    return fig


def _plot_trajectory(path: Path, result: ReplayResult, correct: list[bool | None], data_label: str = "",
                     min_matches: int = loop_class.DEFAULT_MIN_MATCHES) -> Figure:
    posed = [r for r in result.records if r.position is not None]
    fig = Figure(figsize=(6, 6), dpi=100)
    ax = fig.add_subplot()
    for robot, session in sorted({(r.robot_id, r.session_id) for r in posed}):
        xy = np.array([r.position[:2] for r in posed if (r.robot_id, r.session_id) == (robot, session)])
        ax.plot(xy[:, 0], xy[:, 1], ".-", markersize=2, linewidth=0.8,
                label=f"keyframe positions (robot '{robot}', session '{session}')")
    classes = set()
    for lc, ok in zip(result.loop_closures, correct):
        q = result.record((lc.query_robot_id, lc.query_session_id, lc.query_id))
        m = result.record((lc.match_robot_id, lc.match_session_id, lc.match_id))
        if q.position is not None and m.position is not None:
            cls = loop_class.classify(lc, min_matches, truth=ok)  # the one colour code of loops
            classes.add(cls)
            ax.plot([q.position[0], m.position[0]], [q.position[1], m.position[1]],
                    color=loop_class.COLOURS[cls], linewidth=0.8)
    truth = "ground truth" if any(ok is not None for ok in correct) else "no ground truth"
    for cls in (c for c in loop_class.CLASSES if c in classes):
        ax.plot([], [], color=loop_class.COLOURS[cls], label=f"loop closure: {loop_class.LABELS[cls]} ({truth})")
    ax.set(xlabel="x [m]", ylabel="y [m]", title=_titled("keyframes and loop closures", data_label))
    ax.set_aspect("equal", adjustable="datalim")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    return fig


def write_report(out_dir: str | Path, result: ReplayResult, gt: GroundTruth | None, *,
                 frame_id: str = "map", extra: dict[str, Any] | None = None, data_label: str = "",
                 min_matches: int = loop_class.DEFAULT_MIN_MATCHES) -> dict[str, Any]:
    """Write every output file into ``out_dir`` (created; the bag must not exist yet); returns metrics.

    data_label: what is simulated about the data ("SIMULATED odometry"), put in every plot title;
    min_matches: verify.min_matches of the run, for the loops' suspect class (core/eval/loop_class.py).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics, curve, correct = evaluate(result, gt)
    metrics.update(extra or {})
    write_loop_closures(out / "loop_closures", result.loop_closures, frame_id=frame_id)
    files = {"bag": "loop_closures", "csv": "loop_closures.csv", "queries": "queries.csv"}
    if curve is not None:
        files.update(pr_curve="pr_curve.png", pr_curve_csv="pr_curve.csv")
    if any(r.position is not None for r in result.records):
        files["trajectory"] = "trajectory.png"
    metrics["files"] = files
    names = [*list(files.values())[1:], "metrics.json"]
    # our own outputs (replay refuses existing ones first): replaced whole, a link replaced and never followed
    with atomic_files([out / n for n in names], replace=True) as temps:
        tmp = dict(zip(names, temps))
        _write_csvs(tmp, result, correct, curve, gt)
        if curve is not None:
            _plot_pr(tmp["pr_curve.png"], curve, metrics, data_label)
        if "trajectory" in files:
            _plot_trajectory(tmp["trajectory.png"], result, correct, data_label, min_matches)
        tmp["metrics.json"].write_text(json.dumps(metrics, indent=2))
    return metrics
