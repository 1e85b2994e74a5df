"""``vpr-ros bench posegraph --live``: the live pose graph (core/geometry/live_pose_graph.py), keyframe by
keyframe, with iSAM2 and with the batch optimiser at a bounded interval.

Each stream (``posegraph_data.py``) is fed as the node feeds it: keyframe i, then the loops whose newer
keyframe is i, then one ``update()``. Per update the CPU time of this thread is taken (``time.thread_time``:
on a shared machine wall time mostly measures the other processes) and, separately, the wall time;
updates that added loops and those that did not are reported apart. At the end the estimate is
compared with the offline batch result (``optimize_pose_graph``, what ``replay --optimize`` runs) on the
same factors: ATE of both vs the ground truth, and the largest position difference between them.
Every stream is run clean and with its injected wrong loops (10 % by default).
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import time
from typing import Sequence

import numpy as np
import numpy.typing as npt

from vpr_ros.cli.bench.posegraph_data import BenchStream, Loop, corridor_stream, demo_stream, plaza_stream
from vpr_ros.cli.bench.posegraph_euroc import euroc_stream
from vpr_ros.core.config.pose_graph import SOLVERS, PoseGraphConfig
from vpr_ros.core.eval.trajectory import absolute_trajectory_error
from vpr_ros.core.geometry.live_pose_graph import LivePoseGraph, LoopInput, pose_graph_options
from vpr_ros.core.geometry.pose_graph import LoopEdge, optimize_pose_graph

__all__ = ["LiveRun", "replay_live", "run_live_bench", "DATASETS"]

F64 = npt.NDArray[np.float64]
DATASETS = ("demo", "plaza2", "euroc", "corridor")
ROBOT, SESSION = "robot", "session"


@dataclasses.dataclass(frozen=True)
class LiveRun:
    """poses (N, 4, 4) at the end; cpu_ms / wall_ms per update; with_loops: the update added loops;
    solved: the solver optimised (iSAM2: every update; batch: every ``batch_every`` keyframes)."""

    poses: F64
    cpu_ms: F64
    wall_ms: F64
    with_loops: npt.NDArray[np.bool_]
    solved: npt.NDArray[np.bool_]
    loops_rejected: int


def _key(i: int) -> tuple[str, str, int]:
    return ROBOT, SESSION, i


def replay_live(stream: BenchStream, loops: Sequence[Loop], config: PoseGraphConfig) -> LiveRun:
    """Feed ``stream`` keyframe by keyframe with ``loops`` into a LivePoseGraph; see the module docstring."""
    graph = LivePoseGraph(config)
    by_query: dict[int, list[Loop]] = {}
    for loop in loops:
        by_query.setdefault(max(loop[0], loop[1]), []).append(loop)
    cpu, wall, flags, solved = [], [], [], []
    for i, pose in enumerate(stream.odometry):
        c0, w0 = time.thread_time(), time.perf_counter()
        graph.add_keyframe(_key(i), i, pose)
        new = by_query.get(i, [])
        for q, m, rel, cov in new:
            graph.add_loop(LoopInput(_key(q), _key(m), rel, cov))
        solved.append(graph.update())
        cpu.append((time.thread_time() - c0) * 1e3)
        wall.append((time.perf_counter() - w0) * 1e3)
        flags.append(bool(new))
    graph.update(force=True)  # the batch solver's last interval
    return LiveRun(graph.poses(), np.array(cpu), np.array(wall), np.array(flags), np.array(solved),
                   graph.stats().loops_rejected)


def _offline(stream: BenchStream, loops: Sequence[Loop], config: PoseGraphConfig) -> F64:
    edges = [LoopEdge(q, m, rel, cov) for q, m, rel, cov in loops]
    return optimize_pose_graph(stream.odometry, edges, pose_graph_options(config)).poses


def _pct(values: F64, q: float) -> str:
    return f"{np.percentile(values, q):.1f}" if len(values) else "-"


def _streams(args: argparse.Namespace) -> list[BenchStream]:
    out = []
    for name in args.datasets:
        if name == "demo":
            if not args.demo_dir:
                print("demo: skipped (give --demo-dir, the folder of "
                      "vpr-ros demo --single-session --optimize --out DIR)")
                continue
            out.append(demo_stream(args.demo_dir, args.wrong_fraction, args.seed))
        elif name == "plaza2":
            out.append(plaza_stream(args.wrong_fraction, args.seed))
        elif name == "euroc":
            out.append(euroc_stream(args.wrong_fraction, args.seed))
        else:
            out += [corridor_stream(size, args.wrong_fraction, args.seed, args.lap_length_m) for size in args.sizes]
    return out


def run_live_bench(args: argparse.Namespace) -> int:
    print(f"live pose graph (core/geometry/live_pose_graph.py), {args.wrong_fraction:.0%} wrong loops; per-update "
          f"CPU ms of this thread (wall ms in brackets); {platform.processor() or platform.machine()}")
    print(f"{'stream':>14} {'kf':>6} {'loops':>6} {'solver':>6} | {'all p50/p95':>12} {'loop upd p50/p95':>17} "
          f"{'solves p50/p95':>15} {'max':>6} {'CPU s':>6} | {'ATE before':>10} {'clean':>6} {'wrong':>6} {'ratio':>5} "
          f"{'rej':>7} {'offline':>7} {'|live-offl|':>11}")
    for stream in _streams(args):
        gt = stream.ground_truth
        before = absolute_trajectory_error(gt, stream.odometry).rmse_m
        print(f"# {stream.name}: {stream.label}")
        for solver in args.solvers:
            config = PoseGraphConfig(solver=solver, batch_every=args.batch_every)
            runs = {} if args.no_clean and stream.wrong else {"clean": replay_live(stream, stream.loops, config)}
            if stream.wrong:
                runs["wrong"] = replay_live(stream, stream.loops + stream.wrong, config)
            last = runs.get("wrong", runs.get("clean"))
            offline = _offline(stream, stream.loops + stream.wrong, config)
            ate = {k: absolute_trajectory_error(gt, r.poses).rmse_m for k, r in runs.items()}
            ate_offline = absolute_trajectory_error(gt, offline).rmse_m
            diff = float(np.abs(last.poses[:, :3, 3] - offline[:, :3, 3]).max())
            cpu, wall, lp, sv = last.cpu_ms, last.wall_ms, last.with_loops, last.solved
            print(f"{stream.name:>14} {len(gt):>6} {len(stream.loops) + len(stream.wrong):>6} {solver:>6} | "
                  f"{_pct(cpu, 50):>5}/{_pct(cpu, 95):<6} {_pct(cpu[lp], 50):>8}/{_pct(cpu[lp], 95):<8} "
                  f"{_pct(cpu[sv], 50):>7}/{_pct(cpu[sv], 95):<7} {cpu.max():>6.0f} {cpu.sum() / 1e3:>6.1f} | "
                  f"{before:>10.3f} {ate.get('clean', np.nan):>6.3f} {ate.get('wrong', np.nan):>6.3f} "
                  f"{ate.get('wrong', np.nan) / ate.get('clean', np.nan):>5.2f} "
                  f"{last.loops_rejected:>3}/{len(stream.wrong):<3} "
                  f"{ate_offline:>7.3f} {diff:>11.4f}")
            print(f"{'':>14} wall ms: all p50/p95 {_pct(wall, 50)}/{_pct(wall, 95)}, loop updates "
                  f"{_pct(wall[lp], 50)}/{_pct(wall[lp], 95)}, solves {_pct(wall[sv], 50)}/{_pct(wall[sv], 95)}, "
                  f"max {wall.max():.0f}")
    return 0


def add_live_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--live", action="store_true",
                        help="the live pose graph keyframe by keyframe (iSAM2 vs interval batch), "
                             "see posegraph_live.py")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS,
                        help="--live: streams (corridor at each --sizes)")
    parser.add_argument("--solvers", nargs="+", default=list(SOLVERS), choices=SOLVERS, help="--live: solvers")
    parser.add_argument("--batch-every", type=int, default=PoseGraphConfig().batch_every,
                        help="--live: keyframes between two batch optimisations")
    parser.add_argument("--no-clean", action="store_true",
                        help="--live: only the run with wrong loops (the clean run doubles the time at 10k)")
    parser.add_argument("--demo-dir", default="", help="--live: output folder of vpr-ros demo --single-session "
                                                       "--optimize (its pose_graph.g2o and TUM files)")
