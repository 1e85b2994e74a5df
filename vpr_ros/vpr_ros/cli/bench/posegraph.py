"""``vpr-ros bench posegraph``: pose-graph optimisation time for 1k and 10k keyframes; ``--live``: the live
pose graph keyframe by keyframe (``posegraph_live.py``).

The graph is the SIMULATED two-lap corridor (``cli/simulated.py``) sampled denser: N/2 keyframes
per lap along ``--lap-length-m`` (the Corridor's 110 m by default, so the drift stays that of the
demo), one appearance-only loop per lap-2 keyframe, plus 10% wrong loops between places at least
10 % of a lap apart. Each robust method is timed (first run untimed as warm-up), and the ATE is reported so a fast
but wrecked result is visible.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np

from vpr_ros.cli.bench.posegraph_data import corridor_graph
from vpr_ros.cli.bench.posegraph_live import add_live_arguments, run_live_bench
from vpr_ros.core.eval.trajectory import absolute_trajectory_error
from vpr_ros.core.geometry.pose_graph import ROBUST_METHODS, PoseGraphOptions, optimize_pose_graph

__all__ = ["add_arguments", "run_posegraph_bench"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000], help="keyframe counts")
    parser.add_argument("--robust", nargs="+", default=list(ROBUST_METHODS), choices=ROBUST_METHODS)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per size and method")
    parser.add_argument("--wrong-fraction", type=float, default=0.10, help="wrong loops per true loop")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lap-length-m", type=float, default=110.0,
                        help="corridor length; 0 = 1 m per keyframe (N/2 metres: far more drift)")
    add_live_arguments(parser)


def run_posegraph_bench(args: argparse.Namespace) -> int:
    if args.live:
        return run_live_bench(args)
    print(f"pose-graph optimisation (GTSAM LM, Pose3), SIMULATED two-lap corridor "
          f"({args.lap_length_m or 'N/2'} m laps), {args.wrong_fraction:.0%} wrong loops; "
          f"{platform.processor() or platform.machine()}")
    print(f"{'keyframes':>9} {'loops':>6} {'robust':>7} {'mean ms':>9} {'std ms':>8} {'max ms':>8} "
          f"{'rejected':>8} {'ATE before m':>12} {'ATE after m':>11}")
    for size in args.sizes:
        run, loops, num_wrong = corridor_graph(size, args.wrong_fraction, args.seed, args.lap_length_m)
        before = absolute_trajectory_error(run.ground_truth, run.odometry).rmse_m
        for robust in args.robust:
            options = PoseGraphOptions(robust=robust)
            optimize_pose_graph(run.odometry, loops, options)  # warm-up
            times, result = [], None
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                result = optimize_pose_graph(run.odometry, loops, options)
                times.append((time.perf_counter() - t0) * 1e3)
            after = absolute_trajectory_error(run.ground_truth, result.poses).rmse_m
            t = np.array(times)
            print(f"{size:>9} {len(loops):>6} {robust:>7} {t.mean():>9.1f} {t.std():>8.1f} {t.max():>8.1f} "
                  f"{result.loops_rejected:>4}/{num_wrong:<3} {before:>12.2f} {after:>11.2f}")
    return 0
