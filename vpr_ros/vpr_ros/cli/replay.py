"""``vpr-ros replay``: run the loop-closure detector over a rosbag2 and write an evaluation folder."""

from __future__ import annotations

import argparse
import logging
import sqlite3
from pathlib import Path
from typing import Any

import yaml

from vpr_ros.models.text_readers import attach_text_reader, text_extractor
from vpr_ros.cli import replay_fixes
from vpr_ros.cli.replay_inputs import add_arguments as add_geometry_arguments, geometry_inputs
from vpr_ros.cli.replay_gt import (add_arguments as add_gt_arguments, build_ground_truth, check_against_bag,
                                   read_gt_file)
from vpr_ros.cli.report import REPORT_FILES, write_report
from vpr_ros.cli.terminal import say
from vpr_ros.cli.session import (FRAME_INDEX_FILE, STAMP_POLICIES, ReplayResult, load_frame_index,
                                 replay_bag, save_frame_index)
from vpr_ros.core.config import Config, config_from_flat, load_config
from vpr_ros.core.detector import Extractor, LoopClosureDetector
from vpr_ros.core.errors import ConfigError, MapStoreError
from vpr_ros.core.eval.groundtruth import GroundTruth
from vpr_ros.io.gt_files import GroundTruthFile
from vpr_ros.io.output_checks import check_map_load_source, check_map_save_target, check_output_dir
from vpr_ros.nodes.settings import node_parameter_names

__all__ = ["add_parser", "run", "parse_overrides", "build_config", "load_extractor", "ground_truth"]

logger = logging.getLogger(__name__)
LOOPS_LISTED = 10  # loops printed after a replay; the CSV has all


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["index.top_k=10", "detector.robot_id=r1"]`` -> typed dotted overrides (values parsed as YAML)."""
    overrides: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r} is not key=value; write e.g. --set verify.min_matches=60")
        try:
            overrides[key.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({exc}); quote strings, "
                              "e.g. --set detector.robot_id=\"'r1'\"") from None
    return overrides


def build_config(config_path: str | None, overrides: dict[str, Any]) -> Config:
    """Config from an optional ROS parameter YAML plus dotted overrides."""
    if config_path:
        return load_config(config_path, overrides=overrides, skip_keys=node_parameter_names())
    return config_from_flat(overrides)


def load_extractor(config: Config) -> Extractor:
    """The descriptor model named by ``config.model`` (may export/cache an ONNX file on first use)."""
    from vpr_ros.models import load_model_from_config  # heavy (torch/onnxruntime): only when needed

    return load_model_from_config(config.model)


def ground_truth(args: argparse.Namespace, config: Config, map_sessions: set[str],
                 gt_file: GroundTruthFile | None = None) -> GroundTruth | None:
    """The ground truth chosen on the command line (None: no evaluation); cli/replay_gt.py."""
    return build_ground_truth(args, config, gt_file if gt_file is not None else read_gt_file(args), map_sessions)


def check_paths(args: argparse.Namespace) -> None:
    """Fail before the first frame (and before the model loads) on any output that cannot be
    written and any input that is missing, so an hour-long replay never dies at its end."""
    check_output_dir(args.out, must_not_exist=("loop_closures", *REPORT_FILES, *replay_fixes.FIX_FILES))
    for path in args.map_load or ():
        check_map_load_source(path)
    if args.map_save:
        # core/map/snapshot.py refuses foreign targets too; checking here fails before any work is done
        check_map_save_target(args.map_save, protected=(args.bag, args.out))


def run(args: argparse.Namespace) -> int:
    overrides = parse_overrides(args.set)
    config = build_config(args.config, overrides)
    gt_file = read_gt_file(args)  # every ground-truth file is read and checked before the model loads
    check_paths(args)
    inputs = geometry_inputs(args, config.frames)  # frames.base_from_camera: bodies are the base frame
    check_against_bag(gt_file, args)
    from vpr_ros.models.backends.mnn_screen import configured_screen  # torch, like the extractor

    detector = LoopClosureDetector(config, text_extractor(config, load_extractor(config)),
                                   configured_screen(config.verify.mnn_screen))
    attach_text_reader(detector)  # text.ocr=inline: read each new keyframe (the text rule needs it)
    frame_index = {}
    for path in args.map_load or ():  # several maps: sessions/robots side by side, keys never collide
        detector.load_map(path)
        map_frames = load_frame_index(path)
        frame_index.update(map_frames)
        if gt_file is not None and gt_file.table is not None and not map_frames:
            logger.warning("map %s has no %s (it was not saved by vpr-ros replay); its keyframes have "
                           "no frame index, so the ground truth counts none of their loops as true",
                           path, FRAME_INDEX_FILE)
    gt = ground_truth(args, config, {kf.session_id for kf in detector.keyframes}, gt_file)
    fixes = replay_fixes.start(args, config, detector, overrides)  # with --map-load: relocalisation
    result = replay_bag(detector, args.bag, args.image_topic, args.odom_topic,
                        frame_index=frame_index, progress=not args.no_progress,
                        on_stamp_backwards=args.on_stamp_backwards, inputs=inputs, pipeline=args.pipeline,
                        on_step=None if fixes is None else fixes.on_step)
    if args.map_save:
        save_map(detector, args.map_save, result)
    reloc = {} if fixes is None else {"relocalization": replay_fixes.finish(fixes, args, result, gt_file)}
    metrics = write_report(args.out, result, gt, frame_id=config.detector.map_frame, extra=reloc,
                           data_label=args.data_label)
    lines = summary(metrics, Path(args.out)).splitlines() + loop_lines(result, Path(args.out))
    if reloc:
        lines += replay_fixes.summary_lines(reloc["relocalization"])
    for line in lines:
        say(line)  # bag topics and messages quoted from the bag: shown, never obeyed
    if args.optimize:
        from vpr_ros.cli.optimize import run_optimize_step  # gtsam/evo only when asked for

        run_optimize_step(args.out, detector, result.loop_closures)
    return 0


def save_map(detector: LoopClosureDetector, path: str, result: ReplayResult) -> None:
    """Save the map and its frame index; a full disk or a failing file is a MapStoreError."""
    try:
        detector.save_map(path, result.loop_closures)
        save_frame_index(path, result.records)
    except (OSError, sqlite3.Error) as exc:
        # the store maps its own failures to MapStoreError; this covers what reaches us unmapped
        raise MapStoreError(f"cannot save the map to {path}: {exc}; check free disk space and "
                            "permissions, then replay again") from None


def loop_lines(result: ReplayResult, out: Path, first: int = LOOPS_LISTED) -> list[str]:
    """The first loops found, one line each: query frame/keyframe -> match, MNN count, similarity."""
    loops = result.loop_closures
    if not loops:
        return []
    lines = [f"loops found (the first {min(first, len(loops))} of {len(loops)}; all in "
             f"{out / 'loop_closures.csv'}):"]
    for lc in loops[:first]:
        q = result.record((lc.query_robot_id, lc.query_session_id, lc.query_id))
        m = result.record((lc.match_robot_id, lc.match_session_id, lc.match_id))
        other = "" if (m.robot_id, m.session_id) == (q.robot_id, q.session_id) else f"{m.session_id} "
        frame = m.frame_index if m.frame_index >= 0 else "?"  # a loaded map without its frame index
        lines.append(f"  query frame {q.frame_index}/keyframe {q.keyframe_id} -> {other}frame {frame}/"
                     f"keyframe {m.keyframe_id}, {lc.local_matches} MNN matches, similarity "
                     f"{lc.global_similarity:.3f}")
    return lines


def summary(metrics: dict[str, Any], out: Path) -> str:
    """A few human-readable lines about a replay."""
    lines = [f"{metrics['num_frames']} frames, {metrics['num_keyframes']} keyframes "
             f"(+{metrics['num_map_keyframes']} from the loaded map), "
             f"{metrics['num_loop_closures']} loop closures"]
    if metrics.get("geometry_valid") or metrics.get("geometry_rejected"):
        lines.append(f"{metrics['geometry_valid']} loops with a measured relative pose "
                     f"({metrics['geometry_valid_metric']} metric); without a valid pose: "
                     f"{metrics['geometry_rejected'] or 'none'}")
    if metrics.get("text_rule"):
        lines.append("text rule: " + ", ".join(f"{k} {v}" for k, v in metrics["text_rule"].items()))
    if metrics.get("stamps_backwards_skipped"):
        lines.append(f"skipped {metrics['stamps_backwards_skipped']} frames whose stamp went backwards, "
                     f"e.g. {metrics['stamps_backwards_examples'][0]}")
    if metrics.get("bag_salvaged"):
        lines.append(f"the bag was damaged: read what was left, {metrics['bag_unreadable_bytes']} bytes "
                     f"unreadable, {metrics['bag_lost_messages']} image messages that metadata.yaml "
                     "lists lost")
    if metrics["corrupt_messages"]:
        lines.append(f"skipped {metrics['corrupt_messages']} corrupt messages, e.g. "
                     f"{metrics['corrupt_examples'][0]}")
    if metrics.get("precision") is not None:
        lines.append(f"precision {metrics['precision']:.3f}  recall {metrics['recall']:.3f}  "
                     f"F1 {metrics['f1']:.3f}  (TP {metrics['true_positives']}, FP "
                     f"{metrics['false_positives']}, {metrics['queries_with_true_loop']} queries with a "
                     f"true loop)")
        lines.append(f"PR AUC {metrics['auc']:.3f}, max recall at 100% precision "
                     f"{metrics['max_recall_at_100_precision']:.3f}")
        if not metrics["queries_with_true_loop"]:
            lines.append("no query has a true loop the detector may report: revisits of one session closer in "
                         "time than detector.min_loop_gap_sec (default 20 s) are excluded, in the detector and "
                         "in this evaluation; for a short sequence give the bag a slower --rate or lower it, "
                         "e.g. --set detector.min_loop_gap_sec=5")
    lat = metrics["latency_ms"].get("total")
    if lat:
        lines.append(f"latency per frame: p50 {lat['p50']:.1f} ms, p95 {lat['p95']:.1f} ms")
    lines.append(f"outputs in {out}: " + ", ".join(metrics["files"].values()))
    return "\n".join(lines)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("replay", help="detect loop closures in a rosbag2 and evaluate them",
                              description=__doc__)
    p.add_argument("bag", help="rosbag2 directory (sqlite3 or mcap)")
    p.add_argument("--image-topic", required=True, help="sensor_msgs/Image or CompressedImage topic")
    p.add_argument("--odom-topic", help="nav_msgs/Odometry or geometry_msgs/PoseStamped topic (poses)")
    p.add_argument("--config", help="ROS 2 parameter YAML (like config/loop_closure.yaml)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a parameter, e.g. --set verify.min_matches=60 (repeatable)")
    p.add_argument("--map-load", metavar="DIR", action="append",
                   help="load a saved keyframe map before replaying; repeat it to load several (e.g. two "
                        "sessions); a map of this robot and session is continued (new ids follow its own)")
    p.add_argument("--map-save", metavar="DIR",
                   help="save the keyframe map after replaying (a new or empty directory, or a "
                        "vpr_ros map, which is replaced; anything else is refused before replaying)")
    p.add_argument("--out", required=True, help="output folder (its loop_closures/ bag and report files must not "
                                                "exist: never overwritten)")
    p.add_argument("--on-stamp-backwards", choices=STAMP_POLICIES, default="skip",
                   help="a frame older than the previous one: skip it and count it in metrics.json "
                        "(default), or abort the replay")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--pipeline", action=argparse.BooleanOptionalAction, default=True,
                   help="decode and run the model one frame ahead on a second thread while the previous "
                        "frame is searched and verified (same results; --no-pipeline: one thread)")
    p.add_argument("--optimize", action="store_true",
                   help="optimise a pose graph of odometry + loops (GTSAM) and export g2o/TUM (needs --odom-topic)")
    add_gt_arguments(p)
    add_geometry_arguments(p)
    replay_fixes.add_arguments(p)
    p.set_defaults(func=run)
    return p
