"""``vpr-ros bench pipeline``: per-stage latency of the detector on the demo (Corridor) bags.

Runs the multi-session demo flow (session 1 maps the reference traversal, session 2 loads that map
and queries it) and prints p50/p95/mean per stage, after dropping warm-up frames.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
from pathlib import Path

from vpr_ros.cli.arg_types import non_negative_int, positive_int
from vpr_ros.cli.demo import build_demo_bags, replay_two_sessions
from vpr_ros.cli.replay import build_config, load_extractor, parse_overrides
from vpr_ros.core.eval.metrics import latency_stats

__all__ = ["add_arguments", "run_pipeline_bench"]

STAGES = ("extract", "select", "search", "verify", "total")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="ROS 2 parameter YAML (like config/loop_closure.yaml)")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a parameter")
    parser.add_argument("--frames", type=positive_int, default=None,
                        help="frames per traversal (default: all 111)")
    parser.add_argument("--warmup", type=non_negative_int, default=5, help="frames of session 1 not timed")
    parser.add_argument("--stream-frames", type=positive_int, default=None, metavar="N",
                        help="instead: replay one N-frame bag (the Corridor repeated, written once to a temp "
                             "folder) end to end and report frames/s and RSS at every tenth")
    parser.add_argument("--encoding", default="jpeg", choices=("jpeg", "rgb8"),
                        help="--stream-frames: image encoding of the bag")
    parser.add_argument("--pipeline", action=argparse.BooleanOptionalAction, default=True,
                        help="--stream-frames: model one frame ahead on a second thread (default) or not")
    parser.add_argument("--stages", action="store_true",
                        help="instead: time each stage of one frame (decode, colour, float, normalise, resize, "
                             "model, search, verify) for 640x480 and 1280x720 JPEG and raw frames")
    parser.add_argument("--rounds", type=positive_int, default=20, help="--stages: timed rounds per stage")
    parser.add_argument("--json", metavar="FILE", help="--stream-frames / --stages: write the results here")


def run_pipeline_bench(args: argparse.Namespace) -> int:
    if args.stages:
        from vpr_ros.cli.bench.stages import run_stages_bench

        return run_stages_bench(args)
    if args.stream_frames is not None:
        from vpr_ros.cli.bench.stream import run_stream_bench

        return run_stream_bench(args)
    config = build_config(args.config, parse_overrides(args.set))
    model = load_extractor(config)
    with tempfile.TemporaryDirectory(prefix="vpr_ros_bench_") as tmp:
        bags = build_demo_bags(Path(tmp) / "bags", count=args.frames)
        r1, r2 = replay_two_sessions(bags, config, model, Path(tmp) / "map")
    samples = {stage: r1.timings_ms.get(stage, [])[args.warmup:] + r2.timings_ms.get(stage, [])
               for stage in STAGES}
    stats = latency_stats(samples)
    print(f"pipeline latency, model {model.model_id} (backend {config.model.backend}, "
          f"{config.model.threads} thread(s)), {platform.processor() or platform.machine()}")
    print(f"frames timed: {len(samples['total'])} (session 1 after {args.warmup} warm-up frames, then "
          f"session 2 against a {r2.num_map_keyframes}-keyframe map)")
    print(f"{'stage':<10}{'p50 ms':>10}{'p95 ms':>10}{'mean ms':>10}")
    for stage in STAGES:
        if stage in stats:
            s = stats[stage]
            print(f"{stage:<10}{s['p50']:>10.2f}{s['p95']:>10.2f}{s['mean']:>10.2f}")
    print(f"loop closures in session 2: {len(r2.loop_closures)}")
    return 0
