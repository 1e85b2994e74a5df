"""``vpr-ros replay`` ground-truth options: every accepted form (docs/replay.md, "Ground truth").

``--gt FILE`` takes any form (detected from the extension and content; ``--gt-format`` forces one);
``--gt-npy FILE`` (a .npy, the older flag) and ``--gt-poses FILE`` (TUM/KITTI) are the same with the
choice narrowed; ``--gt-radius-m R`` alone uses the odometry topic's positions. Files are read and
checked against the bag before the model loads.
"""

from __future__ import annotations

import argparse
from typing import Any, Callable

import numpy as np

from vpr_ros.cli.arg_types import non_negative_int, positive_float
from vpr_ros.core.config import Config
from vpr_ros.core.errors import ConfigError, InputError
from vpr_ros.core.eval.groundtruth import (Exclusion, GroundTruth, IndexGroundTruth, KeyframeRecord,
                                           PoseGroundTruth)
from vpr_ros.io.bags import ImageBag
from vpr_ros.io.gt_files import GT_FORMATS, GroundTruthFile, read_ground_truth
from vpr_ros.io.pose_files import POSE_FORMATS
from vpr_ros.io.poses import PoseTrack

__all__ = ["add_arguments", "read_gt_file", "check_against_bag", "build_ground_truth"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("ground truth (every form with an example: docs/replay.md, 'Ground truth')")
    files = g.add_mutually_exclusive_group()
    files.add_argument("--gt", metavar="FILE",
                       help="ground truth in any form: loop matrix (PNG/BMP like RTAB-Map's samples_GT.bmp, "
                            ".npy bool/0-1, CSV), per-query lists (VPR-Bench ground_truth_new.npy rows or "
                            "(N,) object array; text 'query: ref ref ...'), or a TUM/KITTI trajectory with "
                            "--gt-radius-m; the form is detected (ambiguous or mis-shaped files are refused)")
    files.add_argument("--gt-npy", metavar="FILE",
                       help="a .npy ground truth (VPR-Bench ground_truth_new.npy, per-query object array or "
                            "loop matrix); read without executing code from its pickle")
    files.add_argument("--gt-poses", metavar="FILE",
                       help="ground-truth trajectory, TUM (matched to frames by stamp) or KITTI (line k = "
                            "image k); a loop is true within --gt-radius-m")
    g.add_argument("--gt-format", choices=GT_FORMATS, default="auto",
                   help="force the form of --gt (default: detected from the extension and content)")
    g.add_argument("--gt-radius-m", type=positive_float, metavar="R",
                   help="pose ground truth: a loop is true when positions are within R metres (from "
                        "--gt-poses, or else from --odom-topic)")
    g.add_argument("--gt-query-offset", type=non_negative_int, default=None, metavar="N",
                   help="per-query ground truth on a single stream: query q is frame N + q (0 allowed); "
                        "without it the bag is the query traversal against --map-load")


def read_gt_file(args: argparse.Namespace) -> GroundTruthFile | None:
    """Read and check the ground-truth options (before the model loads); None: no file given."""
    path = args.gt or args.gt_npy or args.gt_poses
    if path is None:
        if args.gt_format != "auto":
            raise ConfigError("--gt-format needs a ground-truth file: add --gt FILE")
        if args.gt_query_offset is not None:
            raise ConfigError("--gt-query-offset goes with a per-query ground truth: add --gt FILE")
        if args.gt_radius_m is not None and not args.odom_topic:
            raise ConfigError("--gt-radius-m needs poses; give --odom-topic (nav_msgs/Odometry or PoseStamped) "
                              "or a trajectory with --gt-poses FILE")
        return None
    option = "--gt" if args.gt else ("--gt-npy" if args.gt_npy else "--gt-poses")
    if args.gt_poses and args.gt_format not in ("auto", *POSE_FORMATS):
        raise ConfigError(f"--gt-poses is a trajectory; --gt-format {args.gt_format} is not (use --gt)")
    gt = read_ground_truth(path, args.gt_format)
    if args.gt_npy and gt.poses is not None:
        raise InputError(f"--gt-npy {path} is a {gt.form.upper()} trajectory; give it with --gt-poses")
    if args.gt_poses and gt.poses is None:
        raise InputError(f"--gt-poses {path} is a {gt.form} ground truth, not a TUM/KITTI trajectory; give it "
                         "with --gt")
    if gt.poses is not None and args.gt_radius_m is None:
        raise ConfigError(f"{option} {path} is a {gt.form.upper()} trajectory: give --gt-radius-m R (a loop is "
                          "true when the two positions are within R metres)")
    if gt.table is not None and args.gt_radius_m is not None:
        raise ConfigError(f"--gt-radius-m goes with poses (--gt-poses or --odom-topic), not with the {gt.form} "
                          f"ground truth {path}")
    if args.gt_query_offset is not None and (gt.poses is not None or gt.form == "matrix"):
        raise ConfigError(f"--gt-query-offset goes with per-query lists; a {gt.form} ground truth names every "
                          "frame of the bag")
    return gt


def check_against_bag(gt: GroundTruthFile | None, args: argparse.Namespace) -> None:
    """Refuse a ground truth that cannot belong to this bag: a matrix or KITTI file of another length,
    or, on a single stream (--gt-query-offset), indices beyond its images."""
    if gt is None or gt.form in ("tum", "vprbench", "lists") and args.gt_query_offset is None:
        return
    with ImageBag(args.bag, args.image_topic) as bag:
        images = bag.num_images
    where = f"the bag has {images} images on {args.image_topic}"
    if gt.form == "matrix" and gt.table.size != images:  # type: ignore[union-attr]
        n = gt.table.size  # type: ignore[union-attr]
        raise InputError(f"ground truth {gt.path} is a {n}x{n} loop matrix but {where}; a loop matrix is "
                         "(N, N) with N = the number of images")
    poses = len(gt.poses.poses) if gt.poses is not None else images
    if gt.form == "kitti" and poses != images:
        raise InputError(f"ground truth {gt.path} has {poses} KITTI poses but {where}; KITTI has one pose per "
                         "image (use TUM to match by stamp)")
    if gt.table is not None and gt.form != "matrix":
        offset = int(args.gt_query_offset)
        last = max([offset + q for q in gt.table.pairs] + [r for refs in gt.table.pairs.values() for r in refs])
        if last >= images:
            raise InputError(f"ground truth {gt.path}: index out of range, frame {last} but {where} (a single "
                             f"stream with --gt-query-offset {offset}: query q is image {offset} + q, refs are "
                             "images 0..N-1)")


def _position_lookup(gt: GroundTruthFile, config: Config) -> Callable[[KeyframeRecord], Any]:
    pf = gt.poses
    assert pf is not None
    if pf.stamps_ns is None:  # KITTI: line k is image k of this replay's own stream
        positions = pf.positions()
        own = (config.detector.robot_id, config.detector.session_id)

        def by_index(r: KeyframeRecord) -> Any:
            ok = (r.robot_id, r.session_id) == own and 0 <= r.frame_index < len(positions)
            return positions[r.frame_index] if ok else None
        return by_index
    track = PoseTrack(pf.stamps_ns, pf.poses)
    cache: dict[int, Any] = {}

    def by_stamp(r: KeyframeRecord) -> Any:  # TUM: interpolated at the keyframe's stamp (within 0.5 s)
        if r.stamp_ns not in cache:
            pose = track.at(r.stamp_ns)
            cache[r.stamp_ns] = None if pose is None else np.asarray(pose[:3, 3])
        return cache[r.stamp_ns]
    return by_stamp


def build_ground_truth(args: argparse.Namespace, config: Config, gt: GroundTruthFile | None,
                       map_sessions: set[str]) -> GroundTruth | None:
    """The ground truth chosen on the command line (None: no evaluation).

    Per-query lists with a loaded map: the replayed bag is the query traversal and the loaded sessions
    other than this one are the reference; with ``--gt-query-offset N`` one stream holds the reference
    frames 0..N-1 and then the query frames. A loop matrix indexes the frames of the replayed session.
    """
    exclusion = Exclusion(config.detector.min_loop_gap_sec, config.detector.exclude_last_n)
    session = config.detector.session_id
    if gt is None:
        return PoseGroundTruth(args.gt_radius_m, exclusion) if args.gt_radius_m is not None else None
    if gt.poses is not None:
        return PoseGroundTruth(args.gt_radius_m, exclusion, _position_lookup(gt, config))
    assert gt.table is not None
    if gt.form == "matrix":
        return IndexGroundTruth(gt.table.pairs, query_sessions=[session], ref_sessions=[session],
                                exclusion=exclusion)
    if args.gt_query_offset is not None:
        return IndexGroundTruth(gt.table.pairs, query_offset=args.gt_query_offset, exclusion=exclusion)
    refs = map_sessions - {session}
    if not refs:
        raise ConfigError(f"the per-query ground truth {gt.path} needs the reference traversal: load its map with "
                          "--map-load (saved from another session), or give --gt-query-offset N for one stream "
                          "(N = 0: queries and references are the same frames)")
    return IndexGroundTruth(gt.table.pairs, query_sessions=[session], ref_sessions=refs, exclusion=exclusion)
