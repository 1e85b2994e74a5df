"""Relocalisation in ``vpr-ros replay --map-load MAP``: every frame through the relocaliser, every fix
to ``global_pose/`` and ``global_poses.csv``, refusals by reason and the evaluation to metrics.json.

Mode: ``continuous`` unless ``--set relocalization.mode=once|on_demand`` is given on the command line
(a ``--config`` file's mode is the node's, whose default ``on_demand`` waits for requests a bag cannot
make); ``on_demand`` is one request at the first frame, so it gives what ``once`` gives. Continuous
mode keeps ``relocalization.min_interval_sec`` between fixes, as the node does.

Outputs (docs/replay.md, "Relocalisation"): ``global_pose/`` (rosbag2, MCAP, topic ``/global_pose``,
``geometry_msgs/msg/PoseWithCovarianceStamped``: header.frame_id the map frame, stamp the image's,
the fix's 6x6 covariance row-major in the ROS order x y z rot_x rot_y rot_z), ``global_poses.csv``
(one row per fix), ``relocalization_refusals.csv`` (one row per refused keyframe, with the reason
and why) and, with ``--gt-poses`` (TUM/KITTI, in the map frame), ``relocalization.png``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.highlevel import AnyReader
from rosbags.typesys import Stores, get_typestore

from vpr_ros.cli.relocalization_plot import plot_fixes
from vpr_ros.cli.session import ReplayResult
from vpr_ros.core.config import Config
from vpr_ros.core.detector import LoopClosureDetector, StepResult
from vpr_ros.core.eval.relocalization import (FixEvaluation, evaluate_fixes, sees_mapped_place, summarise_fixes)
from vpr_ros.core.localization.relocalizer import REFUSAL_REASONS, Fix, Refusal, Relocalizer
from vpr_ros.core.types import Frame
from vpr_ros.io.bag_writer import write_poses_with_covariance
from vpr_ros.io.gt_files import GroundTruthFile
from vpr_ros.io.output_files import atomic_files
from vpr_ros.io.poses import PoseTrack, matrix_to_pose, pose_matrix

__all__ = ["FIX_FILES", "FIX_TOPIC", "CSV_COLUMNS", "SEES_MAP_ANGLE_DEG", "replay_mode", "FixRecorder",
           "read_global_poses", "summary_lines", "start", "finish", "add_arguments"]

logger = logging.getLogger(__name__)
FIX_FILES = ("global_pose", "global_poses.csv", "relocalization_refusals.csv", "relocalization.png")
FIX_TOPIC = "/global_pose"
SEES_MAP_ANGLE_DEG = 45.0  # a keyframe sees a mapped place within --gt-radius-m and this angle of a map keyframe
CSV_COLUMNS = (["stamp_ns", "frame_id", "child_frame_id", "x", "y", "z", "qx", "qy", "qz", "qw"]
               + [f"cov_{i}" for i in range(36)]
               + ["matched_keyframes", "inliers", "kind", "confirmed_by", "position_error_m", "rotation_error_deg",
                  "nees", "wrong"])


def replay_mode(overrides: dict[str, Any]) -> str:
    """The relocalisation mode of a replay: continuous unless ``--set relocalization.mode=...``."""
    return str(overrides.get("relocalization.mode", "continuous"))


class FixRecorder:
    """The relocaliser of one replay (``on_step`` is ``replay_bag``'s callback) and what it said."""

    def __init__(self, config: Config, detector: LoopClosureDetector, mode: str) -> None:
        # the loaded maps' keyframes in the map frame: optimised poses where stored, else the odometry poses
        # of the first map's session (core/map/map_poses.py); taken before this session adds keyframes
        self.map_poses = detector.keyframe_map_poses()
        self.config = dataclasses.replace(
            config, relocalization=dataclasses.replace(config.relocalization, mode=mode))
        self.relocalizer = Relocalizer(self.config, detector, self.map_poses)
        if mode == "on_demand":
            self.relocalizer.request()  # a bag cannot call ~/relocalize: one request at the start
        self.fixes: list[Fix] = []
        self.refusals: list[Refusal] = []
        #: (stamp_ns, frame index on the image topic) of this session's keyframes, set by :meth:`finish`
        self.keyframes: list[tuple[int, int]] = []

    def on_step(self, frame: Frame, step: StepResult) -> None:
        outcome = self.relocalizer.step(step, frame.pose)
        if isinstance(outcome, Fix):
            self.fixes.append(outcome)
        elif isinstance(outcome, Refusal):
            self.refusals.append(outcome)

    def finish(self, result: ReplayResult) -> None:
        """Take the replayed session's keyframes (stamps, frame indices) from the replay's result."""
        self.keyframes = [(o.record.stamp_ns, o.record.frame_index) for o in result.outcomes]

    # -- evaluation -------------------------------------------------------------------------
    def _truth(self, gt: GroundTruthFile | None) -> list[np.ndarray | None] | None:
        if gt is None or gt.poses is None:
            return None
        pf = gt.poses
        if pf.stamps_ns is None:  # KITTI: line k is image k of the replayed topic
            return [pf.poses[i] if 0 <= i < len(pf.poses) else None for _, i in self.keyframes]
        track = PoseTrack(pf.stamps_ns, pf.poses)
        return [track.at(stamp) for stamp, _ in self.keyframes]

    def evaluate(self, gt: GroundTruthFile | None, radius_m: float | None) -> tuple[dict[str, Any] | None,
                                                                                    list[FixEvaluation] | None]:
        """(summary, per-fix rows) against a TUM/KITTI ground truth in the map frame; (None, None) without."""
        truth = self._truth(gt)
        if truth is None or radius_m is None:
            return None, None
        map_T = [p.T_map_base for p in self.map_poses.values()]
        sees = sees_mapped_place(truth, map_T, radius_m, SEES_MAP_ANGLE_DEG)
        stamps = [s for s, _ in self.keyframes]
        rows = evaluate_fixes(self.fixes, stamps, truth, sees)
        summary = summarise_fixes(rows, stamps, sees)
        summary["sees_map_rule"] = (f"true pose within {radius_m} m (--gt-radius-m) and {SEES_MAP_ANGLE_DEG} deg "
                                    "of a map keyframe's pose")
        return summary, rows

    def metrics(self, evaluation: dict[str, Any] | None) -> dict[str, Any]:
        """metrics.json's ``relocalization`` section."""
        counts = dict(self.relocalizer.counts)
        return {
            "mode": self.config.relocalization.mode,
            "map_frame": self.config.detector.map_frame, "base_frame": self.config.frames.base_frame,
            "map_poses": {"keyframes": len(self.map_poses),
                          "sources": {s: sum(p.source == s for p in self.map_poses.values())
                                      for s in sorted({p.source for p in self.map_poses.values()})}},
            "keyframes": len(self.keyframes), "fixes": len(self.fixes),
            "fix_kinds": {k: sum(f.kind == k for f in self.fixes) for k in sorted({f.kind for f in self.fixes})},
            "refusals": {r: counts.get(r, 0) for r in REFUSAL_REASONS},
            "evaluation": evaluation,
            "files": list(FIX_FILES[:3]) + (["relocalization.png"] if evaluation is not None else []),
        }

    # -- outputs ----------------------------------------------------------------------------
    def write(self, out: str | Path, rows: list[FixEvaluation] | None, data_label: str = "",
              gt: GroundTruthFile | None = None) -> None:
        """The bag, the CSV and (with an evaluation) the plot; the replay checked their names first."""
        out = Path(out)
        write_poses_with_covariance(out / "global_pose", [(f.stamp_ns, f.frame_id, f.T_map_base, f.covariance)
                                                          for f in self.fixes], topic=FIX_TOPIC)
        names = ["global_poses.csv", "relocalization_refusals.csv"]
        names += ["relocalization.png"] if rows is not None else []
        with atomic_files([out / n for n in names], replace=True) as temps:
            self._write_csv(temps[0], rows)
            with open(temps[1], "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["stamp_ns", "reason", "matched_keyframes", "detail"])
                w.writerows([r.stamp_ns, r.reason, " ".join(r.matched_keyframes), r.detail] for r in self.refusals)
            if rows is not None:
                truth = self._truth(gt) or []
                plot_fixes(temps[2], [p.T_map_base for p in self.map_poses.values()], self.fixes, rows, truth,
                           data_label)

    def _write_csv(self, path: Path, rows: list[FixEvaluation] | None) -> None:
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(CSV_COLUMNS)
            for i, fix in enumerate(self.fixes):
                (x, y, z), q = matrix_to_pose(fix.T_map_base)
                r = rows[i] if rows is not None else None
                w.writerow([fix.stamp_ns, fix.frame_id, fix.child_frame_id, *(f"{v:.9f}" for v in (x, y, z, *q)),
                            *(f"{v:.9g}" for v in np.asarray(fix.covariance, np.float64).reshape(36)),
                            " ".join(fix.matched_keyframes), " ".join(str(n) for n in fix.inliers), fix.kind,
                            fix.confirmed_by, *_eval_cells(r)])


def _eval_cells(r: FixEvaluation | None) -> list[str]:
    if r is None or r.position_error_m is None:
        return ["", "", "", ""]
    return [f"{r.position_error_m:.6f}", f"{r.rotation_error_deg:.6f}",
            "" if r.nees is None else f"{r.nees:.4f}", str(int(r.wrong))]


def read_global_poses(bag: str | Path) -> list[dict[str, Any]]:
    """Every message of a ``global_pose/`` bag, decoded with the definition the bag carries:
    topic, msgtype, stamp_ns (header), frame_id, T (4, 4), covariance (6, 6), recorded_ns."""
    out = []
    with AnyReader([Path(bag)], default_typestore=get_typestore(Stores.EMPTY)) as reader:
        for conn, recorded, raw in reader.messages():
            m = reader.deserialize(raw, conn.msgtype)
            p = m.pose.pose
            out.append({"topic": conn.topic, "msgtype": conn.msgtype,
                        "stamp_ns": m.header.stamp.sec * 10**9 + m.header.stamp.nanosec,
                        "frame_id": m.header.frame_id, "recorded_ns": int(recorded),
                        "T": pose_matrix((p.position.x, p.position.y, p.position.z),
                                         (p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w)),
                        "covariance": np.asarray(m.pose.covariance, np.float64).reshape(6, 6)})
    return out


def summary_lines(section: dict[str, Any]) -> list[str]:
    """A few lines about the relocalisation of a replay."""
    refused = ", ".join(f"{k} {v}" for k, v in section["refusals"].items() if v) or "none"
    lines = [f"relocalisation ({section['mode']}): {section['fixes']} fixes on {section['keyframes']} keyframes; "
             f"refused: {refused}; in " + ", ".join(section["files"])]
    ev = section.get("evaluation")
    if ev:
        first = ("no fix after the first keyframe that sees a mapped place" if ev["keyframes_to_first_fix"] is None
                 else f"first fix {ev['time_to_first_fix_s']:.1f} s / keyframe {ev['keyframes_to_first_fix']} after "
                      "seeing a mapped place")
        rate = "-" if ev["fix_rate"] is None else f"{ev['fix_rate']:.0%}"
        lines.append(f"  {first}; fix rate {rate} of {ev['keyframes_seeing_map']} keyframes that see the map; "
                     f"wrong fixes {ev['wrong_fixes']} ({ev['wrong_fix_rule']})")
        pos, rot, nees = ev["position_error_m"], ev["rotation_error_deg"], ev["nees"]
        if pos["median"] is not None:
            lines.append(f"  error median {pos['median']:.3f} m / {rot['median']:.2f} deg, p95 {pos['p95']:.3f} m / "
                         f"{rot['p95']:.2f} deg; NEES mean {_fmt(nees['mean'])} (6 expected), median "
                         f"{_fmt(nees['median'])}")
    return lines


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def start(args: argparse.Namespace, config: Config, detector: LoopClosureDetector,
          overrides: dict[str, Any]) -> FixRecorder | None:
    """The recorder of a replay with ``--map-load`` and ``relocalization.enabled``; None otherwise."""
    if not args.map_load or not config.relocalization.enabled:
        return None
    recorder = FixRecorder(config, detector, replay_mode(overrides))
    own = (config.detector.robot_id, config.detector.session_id)
    if not any((k[0], k[1]) != own for k in recorder.map_poses):
        logger.warning("relocalisation: the loaded map has no keyframe of another session with a pose in the map "
                       "frame (this replay is robot %r, session %r, the map's own session, which it continues); "
                       "give this replay its own session, e.g. --set detector.session_id=\"'day2'\"", *own)
    return recorder


def finish(recorder: FixRecorder, args: argparse.Namespace, result: ReplayResult,
           gt_file: GroundTruthFile | None) -> dict[str, Any]:
    """Evaluate (with --gt-poses), write the fix outputs into ``args.out``; metrics.json's section."""
    recorder.finish(result)
    evaluation, rows = recorder.evaluate(gt_file, args.gt_radius_m)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    recorder.write(args.out, rows, args.data_label, gt_file)
    section = recorder.metrics(evaluation)
    section["data_label"] = args.data_label
    return section


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-label", default="", metavar="TEXT",
                   help="what is simulated about the data, e.g. 'SIMULATED (RENDERED from real photographs)': "
                        "leads every plot title and is stored in metrics.json")
