"""``vpr-ros demo``: multi-session loop closure on the embedded Corridor dataset, end to end.

Builds real rosbag2 (mcap) bags from the two Corridor traversals, replays the reference traversal as
mapping session 1 (map saved), then the query traversal as session 2 that loads session 1's map and
closes loops against it, and evaluates against the VPR-Bench ground truth. ``--single-session``
replays both traversals as one stream instead, with SIMULATED odometry (``cli/simulated.py``: the
Corridor has no poses), so the odometry gate can reject aliased places; ``--optimize`` then builds
the pose graph and reports the ATE against the simulated ground truth (``cli/optimize.py``).
``--simulated-plates`` replays a SIMULATED variant with room-number plates read by OCR, and
``--text-rule`` uses the text in verification (``cli/demo_text.py``, docs/place_text.md).

Every mode also saves the map the last replay ends with, its loops included (``OUT/map``: session 1's
keyframes + session 2's, or the single stream), and the HTML report of it (``OUT/report.html``,
``vpr-ros map report``: the gallery of loops, most suspicious first).
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import numpy.typing as npt

from vpr_ros.cli import demo_text
from vpr_ros.cli.corridor import corridor_dir, corridor_frames
from vpr_ros.cli.map_cmd import write_report_file
from vpr_ros.cli.replay import build_config, load_extractor, parse_overrides, summary
from vpr_ros.cli.report import write_report
from vpr_ros.cli.session import ReplayResult, load_frame_index, replay_bag, save_frame_index
from vpr_ros.cli.simulated import SIMULATED_LABEL, SimulatedRun, simulated_trajectory
from vpr_ros.core.config import Config, config_from_flat
from vpr_ros.core.detector import Extractor, LoopClosureDetector
from vpr_ros.core.errors import BagError, ConfigError
from vpr_ros.core.eval.groundtruth import Exclusion, IndexGroundTruth, load_vprbench_gt
from vpr_ros.core.types import Frame
from vpr_ros.io.bag_writer import write_image_bag
from vpr_ros.io.output_checks import check_output_dir

__all__ = ["add_parser", "run", "run_demo", "corridor_frames", "build_demo_bags", "DemoBags",
           "IMAGE_TOPIC", "T0_NS", "PERIOD_NS", "SESSION2_OFFSET_NS", "SINGLE_SESSION_GAP_SEC"]

IMAGE_TOPIC = "/camera/image_raw"
ODOM_TOPIC = "/odom"  # single stream only: the SIMULATED odometry
SIMULATION_SEED = 0
NS = 1_000_000_000
T0_NS = 1_700_000_000 * NS      # an arbitrary wall-clock start
PERIOD_NS = NS // 10            # 10 Hz camera
SESSION2_OFFSET_NS = 3600 * NS  # session 2 is recorded an hour after session 1
# In one stream the second pass comes right after the first (11.1 s later at 10 Hz); an exclusion
# window shorter than that lets the revisit match the first pass (and aliased places of the same pass).
SINGLE_SESSION_GAP_SEC = 5.0


@dataclasses.dataclass(frozen=True)
class DemoBags:
    """Bags of the demo: session 1 (ref) and 2 (query), or one stream (ref then query)."""

    session1: Path | None
    session2: Path | None
    single: Path | None
    num_ref: int
    simulated: SimulatedRun | None = None  # single stream: its simulated ground truth and odometry


def build_demo_bags(bag_dir: str | Path, single_session: bool = False, count: int | None = None,
                    storage: str = "mcap", frames: tuple[Sequence[npt.NDArray[np.uint8]], ...] | None = None,
                    encoding: str = "rgb8") -> DemoBags:
    """Write the Corridor traversals as rosbag2 ``sensor_msgs/Image`` (rgb8) bags at 10 Hz.

    Session 2 starts :data:`SESSION2_OFFSET_NS` after session 1; the single stream is continuous.
    ``frames``: (ref, query) frames to write instead of the Corridor's own (the SIMULATED plated
    Corridor); ``encoding``: as ``write_image_bag`` ("jpeg" keeps the upscaled frames' bags small).
    """
    bag_dir = Path(bag_dir)
    ref, query = (corridor_frames("ref", count), corridor_frames("query", count)) if frames is None else \
        (list(frames[0]), list(frames[1]))
    if single_session:
        sim = simulated_trajectory(len(ref), len(query), seed=SIMULATION_SEED)
        frames = [Frame(T0_NS + i * PERIOD_NS, im, pose) for i, (im, pose) in enumerate(zip(ref + query, sim.odometry))]
        return DemoBags(None, None, write_image_bag(bag_dir / "single_stream", frames, IMAGE_TOPIC, encoding=encoding,
                                                    pose_topic=ODOM_TOPIC, storage=storage), len(ref), sim)
    s1 = [Frame(T0_NS + i * PERIOD_NS, im) for i, im in enumerate(ref)]
    s2 = [Frame(T0_NS + SESSION2_OFFSET_NS + i * PERIOD_NS, im) for i, im in enumerate(query)]
    return DemoBags(write_image_bag(bag_dir / "session1_ref", s1, IMAGE_TOPIC, encoding=encoding, storage=storage),
                    write_image_bag(bag_dir / "session2_query", s2, IMAGE_TOPIC, encoding=encoding, storage=storage),
                    None, len(ref))


#: Marks an output folder as the demo's own, and what a re-run replaces in it.
DEMO_MARKER = ".vpr_ros_demo"
DEMO_OUTPUTS = ("bags", "map_session1", "session2", "single_session", "map")
MAP_DIR, REPORT_HTML = "map", "report.html"  # the final map with its loops, and its HTML report


def replay_two_sessions(bags: DemoBags, config: Config, model: Extractor, map_dir: Path, *,
                        progress: bool = False) -> tuple[ReplayResult, ReplayResult]:
    """The multi-session case: replay session 1, save its map to ``map_dir``, then replay session 2
    against the reloaded map. Returns both replays (the demo reports the second; the bench times both)."""
    return _two_sessions(bags, config, model, map_dir, progress)[:2]


def _two_sessions(bags: DemoBags, config: Config, model: Extractor, map_dir: Path,
                  progress: bool) -> tuple[ReplayResult, ReplayResult, LoopClosureDetector]:
    """:func:`replay_two_sessions`, plus session 2's detector (its keyframes' text)."""
    session1 = LoopClosureDetector(config_from_flat({"detector.session_id": "session1"}, base=config), model)
    demo_text.attach_text_reader(session1)
    result1 = replay_bag(session1, bags.session1, IMAGE_TOPIC, progress=progress)
    session1.save_map(map_dir)
    save_frame_index(map_dir, result1.records)
    session2 = LoopClosureDetector(config_from_flat({"detector.session_id": "session2"}, base=config), model)
    session2.load_map(map_dir)
    demo_text.attach_text_reader(session2)
    result2 = replay_bag(session2, bags.session2, IMAGE_TOPIC, frame_index=load_frame_index(map_dir),
                         progress=progress)
    return result1, result2, session2


def run_demo(out: str | Path, config: Config, model: Extractor, *, single_session: bool = False,
             count: int | None = None, progress: bool = True, optimize: bool = False,
             plates: str | None = None) -> dict[str, Any]:
    """Run the demo into ``out``; returns the evaluation metrics (also in ``out/.../metrics.json``).

    plates: replay the SIMULATED plated Corridor with this plate boundary ("both", "none"), or None.
    """
    out = Path(out)
    marker = out / DEMO_MARKER
    if marker.exists():
        # Our own earlier run: replace it, so `make demo` can be repeated.
        for name in DEMO_OUTPUTS:
            shutil.rmtree(out / name, ignore_errors=True)
        (out / REPORT_HTML).unlink(missing_ok=True)
    else:
        for name in ("bags", MAP_DIR, REPORT_HTML):
            if (out / name).exists() or (out / name).is_symlink():
                raise BagError(f"{out} holds a '{name}' that no demo wrote; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    marker.write_text("written by vpr-ros demo; the next demo run with this --out replaces it\n")
    pairs = load_vprbench_gt(corridor_dir() / "ground_truth_new.npy")
    plated = None if plates is None else demo_text.plated_corridor(
        corridor_frames("ref", count), corridor_frames("query", count), plates)
    bags = build_demo_bags(out / "bags", single_session, count, frames=None if plated is None else
                           (plated.ref, plated.query), encoding="rgb8" if plated is None else "jpeg")
    if single_session:
        detector = LoopClosureDetector(config, model)
        demo_text.attach_text_reader(detector)
        result = replay_bag(detector, bags.single, IMAGE_TOPIC, ODOM_TOPIC, progress=progress)
        det = config.detector
        gt = IndexGroundTruth(pairs, query_offset=bags.num_ref,
                              exclusion=Exclusion(det.min_loop_gap_sec, det.exclude_last_n))
        report_dir = out / "single_session"
    else:
        _, result, detector = _two_sessions(bags, config, model, out / "map_session1", progress)
        gt = IndexGroundTruth(pairs, query_sessions={"session2"}, ref_sessions={"session1"})
        report_dir = out / "session2"
    extra = {"mode": "single_session" if single_session else "multi_session", "num_ref_frames": bags.num_ref}
    if single_session:
        extra["odometry"] = SIMULATED_LABEL
    extra["frames"] = "corridor" if plated is None else \
        f"{plated.label}: corridor x{plated.scale} ({plated.ref[0].shape[1]}x{plated.ref[0].shape[0]})"
    if config.text.ocr == "inline":
        extra["ocr"] = demo_text.ocr_metrics(list(zip(result.records, (kf.text for kf in detector.keyframes))),
                                             config.text.min_confidence, plated, bags.num_ref if single_session else 0)
    simulated = ([f"{SIMULATED_LABEL.upper()} odometry"] if single_session else []) + \
        ([] if plated is None else [plated.label])
    metrics = write_report(report_dir, result, gt, frame_id=config.detector.map_frame, extra=extra,
                           data_label=", ".join(simulated), min_matches=config.verify.min_matches)
    if optimize:
        metrics.update(_optimize_simulated(report_dir, detector, result, bags))
    metrics["report_dir"] = str(report_dir)
    loops = []
    for lc in result.loop_closures:
        query = result.record((lc.query_robot_id, lc.query_session_id, lc.query_id))
        match = result.record((lc.match_robot_id, lc.match_session_id, lc.match_id))
        loops.append((query, match, lc, gt.is_true(query, match)))
    metrics.update(_save_map_and_report(out, detector, result, {(q.key, m.key): ok for q, m, _, ok in loops}))
    metrics["_loops"] = loops  # for printing; not written to metrics.json
    return metrics


def _save_map_and_report(out: Path, detector: LoopClosureDetector, result: ReplayResult,
                         truth: dict) -> dict[str, Any]:
    """The map the demo ends with (every keyframe, the replay's loops) and its HTML report, each loop
    marked correct or wrong by the ground truth (``truth``: (query key, match key) -> bool)."""
    detector.save_map(out / MAP_DIR, result.loop_closures)
    write_report_file(out / MAP_DIR, out / REPORT_HTML, min_matches=detector.config.verify.min_matches,
                      truth=truth)
    return {"map_dir": str(out / MAP_DIR), "report_html": str(out / REPORT_HTML)}


def _optimize_simulated(report_dir: Path, detector: LoopClosureDetector, result: ReplayResult,
                        bags: DemoBags) -> dict[str, Any]:
    """Pose graph of the single stream, ATE against its SIMULATED ground truth."""
    from vpr_ros.cli.optimize import optimize_stream  # gtsam/evo only when asked for
    from vpr_ros.core.geometry.live_pose_graph import pose_graph_options

    if bags.simulated is None:
        raise ConfigError("--optimize needs --single-session: the multi-session Corridor bags have no poses")
    det = detector.config.detector
    gt = {r.keyframe_id: bags.simulated.ground_truth[r.frame_index] for r in result.records
          if (r.robot_id, r.session_id) == (det.robot_id, det.session_id)}
    return optimize_stream(report_dir, detector.keyframes, result.loop_closures, robot_id=det.robot_id,
                           session_id=det.session_id, ground_truth=gt,
                           ground_truth_label=f"{SIMULATED_LABEL} ground truth",
                           data_label=f"{SIMULATED_LABEL.upper()} odometry",
                           options=pose_graph_options(detector.config.pose_graph))


def _name(frame_index: int, num_ref: int, single: bool, role: str) -> str:
    if single:  # one stream: ref frames first, then the query frames
        role, frame_index = ("ref", frame_index) if frame_index < num_ref else ("query", frame_index - num_ref)
    return f"{role} frame {frame_index:3d}"


def _print_loops(loops: Sequence[tuple[Any, Any, Any, bool]], num_ref: int, single: bool,
                 limit: int = 20) -> None:
    print(f"loop closures found: {len(loops)}")
    for q, m, lc, ok in loops[:limit]:
        mark = "correct" if ok else "WRONG"
        print(f"  {_name(q.frame_index, num_ref, single, 'query')} -> "
              f"{_name(m.frame_index, num_ref, single, 'ref')}  MNN {lc.local_matches:4d}  "
              f"cos {lc.global_similarity:.3f}  {mark}")
    if len(loops) > limit:
        print(f"  ... {len(loops) - limit} more in loop_closures.csv")


def run(args: argparse.Namespace) -> int:
    config = build_config(args.config, parse_overrides(args.set))
    if args.optimize and not args.single_session:
        raise ConfigError("--optimize needs --single-session: only the single stream has (simulated) poses")
    own_gap = any(s.startswith("detector.min_loop_gap_sec") for s in args.set or [])
    if args.single_session and not own_gap:
        config = config_from_flat({"detector.min_loop_gap_sec": SINGLE_SESSION_GAP_SEC}, base=config)
    config = demo_text.apply_arguments(args, config)
    if args.out:
        check_output_dir(args.out)  # before the model loads
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="vpr_ros_demo_"))
    mode = f"single session (both traversals in one stream, {SIMULATED_LABEL} odometry)" if args.single_session else \
        "multi-session (session 2 closes loops against session 1's saved map)"
    frames = f"{demo_text.SIMULATED_PLATES_LABEL} Corridor (x{demo_text.PLATE_SCALE})" if args.simulated_plates \
        else "Corridor"
    print(f"vpr-ros demo: {frames} dataset, {mode}; model {config.model.preset}; text.ocr {config.text.ocr}, "
          f"text.rule {str(config.text.rule).lower()}")
    model = demo_text.text_extractor(config, load_extractor(config))
    metrics = run_demo(out, config, model, single_session=args.single_session,
                       progress=not args.no_progress, optimize=args.optimize,
                       plates=args.plate_boundary if args.simulated_plates else None)
    _print_loops(metrics.pop("_loops"), metrics["num_ref_frames"], args.single_session)
    print(summary(metrics, Path(metrics["report_dir"])))
    if "ocr" in metrics:
        print(demo_text.format_ocr_summary(metrics))
    if args.single_session:
        print(f"odometry gate ({SIMULATED_LABEL} odometry): {metrics['odometry_rejected']} candidates "
              "rejected before verification")
    if args.optimize:
        from vpr_ros.cli.optimize import format_optimize_summary

        print(format_optimize_summary(metrics))
        print(f"trajectory plot ({SIMULATED_LABEL}): {Path(metrics['report_dir']) / 'trajectory_optimized.png'}")
    if not args.single_session:
        print(f"session 1 map alone (what session 2 loaded) saved in {out / 'map_session1'}; bags in {out / 'bags'}")
    what = "both sessions" if not args.single_session else "the single stream"
    print(f"map with {what} and its {metrics['num_loop_closures']} loops: {metrics['map_dir']} "
          f"(vpr-ros map info|export|report)")
    print(f"HTML report, loop gallery first: {metrics['report_html']}")
    return 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("demo", help="multi-session loop closure on the embedded Corridor data",
                              description=__doc__)
    p.add_argument("--out", help="output folder (default: a new temporary folder)")
    p.add_argument("--single-session", action="store_true",
                   help="replay both traversals as one stream in one session, with SIMULATED odometry")
    p.add_argument("--optimize", action="store_true",
                   help="with --single-session: pose graph (GTSAM), ATE before/after vs the simulated "
                        "ground truth, trajectory plot, g2o/TUM exports")
    p.add_argument("--config", help="ROS 2 parameter YAML (like config/loop_closure.yaml)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a parameter")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    demo_text.add_arguments(p)
    p.set_defaults(func=run)
    return p
