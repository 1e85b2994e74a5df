"""``vpr-ros bench pipeline|models|verify|node|geometry|posegraph|map|crash|ocr|relocalization``: speed and memory benchmarks (never timed tests)."""

from __future__ import annotations

import argparse
import importlib

# target -> (module, arguments function, run function)
TARGETS = {
    "pipeline": ("vpr_ros.cli.bench.pipeline", "add_arguments", "run_pipeline_bench",
                 "per-stage latency of the detector on the demo bag"),
    "models": ("vpr_ros.cli.bench.models", "add_arguments", "run_models_bench",
               "SelaVPR/CricaVPR backends side by side against the eager fp32 forward"),
    "verify": ("vpr_ros.cli.bench.verify", "add_arguments", "run_verify_bench",
               "exact MNN re-ranking: official style, numpy and mnn_batched against the GEMM floor"),
    "node": ("vpr_ros.cli.bench.node", "add_arguments", "run_node_bench",
             "ROS node overhead and image-to-LoopClosure latency (needs the ROS 2 wheels)"),
    "geometry": ("vpr_ros.cli.bench.geometry", "add_arguments", "run_geometry_bench",
                 "relative pose per candidate: MNN alone vs MNN + refinement + pose; errors on EuRoC"),
    "posegraph": ("vpr_ros.cli.bench.posegraph", "add_arguments", "run_posegraph_bench",
                  "pose-graph optimisation time for 1k and 10k keyframes (GTSAM, robust methods)"),
    "map": ("vpr_ros.cli.bench.map", "add_arguments", "run_map_bench",
            "keyframe index at 1k-100k keyframes: flat vs HNSW vs IVF, latency, recall, RSS, disk"),
    "crash": ("vpr_ros.cli.bench.map_crash", "add_arguments", "run_crash_bench", "SIGKILL a live-map writer >= 100x"),
    "ocr": ("vpr_ros.cli.bench.ocr", "add_arguments", "run_ocr_bench", "ms per OCR read at 160x120, 640x480, 752x480"),
    "relocalization": ("vpr_ros.cli.bench.relocalization", "add_arguments", "run_relocalization_bench",
                       "kidnapped-robot starts in a saved map through vpr-ros replay (SIMULATED rooms + EuRoC)"),
}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("bench", help="benchmarks (latency, speed-ups)")
    targets = parser.add_subparsers(dest="target", required=True, metavar="TARGET")
    for name, (module, add_args, run, help_text) in TARGETS.items():
        sub = targets.add_parser(name, help=help_text)
        mod = importlib.import_module(module)
        getattr(mod, add_args)(sub)
        sub.set_defaults(func=getattr(mod, run))
