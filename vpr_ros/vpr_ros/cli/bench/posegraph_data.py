"""Inputs of ``vpr-ros bench posegraph --live``: keyframe streams with ground truth, drifted odometry and loops.

* ``corridor-<N>``: the SIMULATED two-lap corridor of ``bench posegraph`` (N keyframes, one
  appearance-only loop per lap-2 keyframe, wrong loops between places >= 10 % of a lap apart).
* ``demo``: the SIMULATED single-stream demo as ``vpr-ros demo --single-session --optimize`` wrote it
  (``--demo-dir``: its ``pose_graph.g2o`` holds the keyframes' odometry and every edge, the detected loops
  included; ``ground_truth.tum`` the simulated ground truth), plus 10 % wrong loops.
* ``plaza2``: a **real** robot trajectory, CMU's Plaza2 (Djugash and Singh, J. Field Robotics 2010; GPS-RTK
  ground truth, 2-D, shipped with GTSAM's example data) sampled every ``--plaza-spacing-m``, with
  SIMULATED drifted odometry (:func:`simulated_drift`, the noise model of ``cli/simulated.py``) and
  SIMULATED loops: each keyframe's nearest earlier keyframe within 1 m, 30 s earlier and facing within 30
  deg (what a place recogniser could find), appearance-only; plus 10 % wrong loops >= 10 m apart.
* ``euroc``: a **real** 6-DoF MAV trajectory, EuRoC V1_02_medium (Vicon ground truth, packaged in
  ``vpr_ros/data/euroc_v102/``), with SIMULATED drifted odometry and SIMULATED metric loops; built in
  ``posegraph_euroc.py``, whose docstring gives its rules.

Every loop is ``(query, match, T_match_query or None, covariance or None)``, indices into the stream.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import numpy.typing as npt

from vpr_ros.cli.simulated import simulated_drift, simulated_trajectory
from vpr_ros.core.errors import InputError
from vpr_ros.core.geometry.pose_graph import LoopEdge
from vpr_ros.core.keyframes import rotation_angle

__all__ = ["BenchStream", "Loop", "simulated_drift", "corridor_graph", "corridor_stream", "demo_stream", "plaza_stream",
           "wrong_loops"]

F64 = npt.NDArray[np.float64]
Loop = tuple[int, int, "F64 | None", "F64 | None"]


@dataclasses.dataclass(frozen=True)
class BenchStream:
    """ground_truth / odometry: (N, 4, 4); loops: true loops; wrong: injected wrong loops; label says
    what is simulated."""

    name: str
    label: str
    ground_truth: F64
    odometry: F64
    loops: list[Loop]
    wrong: list[Loop]


def _yaw_pose(x: float, y: float, yaw: float) -> F64:
    p = np.eye(4)
    p[:2, :2] = [[math.cos(yaw), -math.sin(yaw)], [math.sin(yaw), math.cos(yaw)]]
    p[:2, 3] = x, y
    return p


def revisits(poses: F64, stamps_sec: F64, min_gap_sec: float, max_m: float = 1.0, max_deg: float = 30.0
             ) -> list[tuple[int, int]]:
    """(query, match) per keyframe that revisits a place: its nearest keyframe (true position) stamped
    at least ``min_gap_sec`` earlier, within ``max_m`` and turned less than ``max_deg``."""
    pairs = []
    for q in range(len(poses)):
        old = np.flatnonzero(stamps_sec[q] - stamps_sec >= min_gap_sec)
        if not len(old):
            continue
        dist = np.linalg.norm(poses[old, :3, 3] - poses[q, :3, 3], axis=1)
        turn = np.array([rotation_angle(poses[m, :3, :3].T @ poses[q, :3, :3]) for m in old])
        ok = (dist < max_m) & (turn < math.radians(max_deg))
        if ok.any():
            pairs.append((q, int(old[ok][np.argmin(dist[ok])])))
    return pairs


def wrong_loops(positions: F64, count: int, min_distance_m: float, seed: int, after: int = 0) -> list[Loop]:
    """``count`` loops between keyframes >= ``min_distance_m`` apart (ground truth), query index >= ``after``."""
    rng = np.random.default_rng(seed)
    n, out = len(positions), []
    for _ in range(1000 * max(count, 1)):
        if len(out) >= count:
            break
        q, m = int(rng.integers(max(after, 1), n)), int(rng.integers(0, n))
        if m < q and np.linalg.norm(positions[q] - positions[m]) >= min_distance_m:
            out.append((q, m, None, None))
    return out


def corridor_graph(size: int, wrong_fraction: float, seed: int, lap_length_m: float) -> tuple:
    """``bench posegraph``'s graph: (SimulatedRun, loops (true then wrong), number of wrong loops)."""
    lap = size // 2
    spacing = lap_length_m / (lap - 1) if lap_length_m > 0 else 1.0
    run = simulated_trajectory(lap, lap, seed=seed, spacing_m=spacing)
    loops = [LoopEdge(lap + i, i) for i in range(lap)]
    rng = np.random.default_rng(seed + 1)
    wrong = []
    while len(wrong) < round(wrong_fraction * lap):
        q, m = int(rng.integers(0, lap)), int(rng.integers(0, lap))
        if abs(q - m) >= lap // 10:
            wrong.append(LoopEdge(lap + q, m))
    return run, loops + wrong, len(wrong)


def corridor_stream(size: int, wrong_fraction: float, seed: int, lap_length_m: float) -> BenchStream:
    """The SIMULATED two-lap corridor of ``bench posegraph`` (its graph, unchanged)."""
    run, edges, num_wrong = corridor_graph(size, wrong_fraction, seed, lap_length_m)
    loops = [(e.query, e.match, None, None) for e in edges]
    true_count = len(loops) - num_wrong
    return BenchStream(f"corridor-{size}", "SIMULATED odometry, SIMULATED corridor", run.ground_truth,
                       run.odometry, loops[:true_count], loops[true_count:])


def _read_tum(path: Path) -> F64:
    from vpr_ros.io.poses import pose_matrix

    rows = [ln.split() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    return np.stack([pose_matrix(tuple(map(float, r[1:4])), tuple(map(float, r[4:8]))) for r in rows])


def demo_stream(demo_dir: str | Path, wrong_fraction: float, seed: int) -> BenchStream:
    """The single-stream demo's keyframes and detected loops from its report folder (see the module docstring)."""
    from vpr_ros.io.poses import pose_matrix

    root = Path(demo_dir)
    report = next(iter(sorted(root.rglob("pose_graph.g2o"))), None)
    if report is None:
        raise InputError(f"{demo_dir}: no pose_graph.g2o; run vpr-ros demo --single-session --optimize --out "
                         f"{demo_dir} first")
    odometry, gt = _read_tum(report.parent / "keyframes_odometry.tum"), _read_tum(report.parent / "ground_truth.tum")
    loops: list[Loop] = []
    for line in report.read_text().splitlines():
        parts = line.split()
        if not parts or parts[0] != "EDGE_SE3:QUAT":
            continue
        i, j = int(parts[1]), int(parts[2])
        if j == i + 1:
            continue  # odometry
        values = list(map(float, parts[3:]))
        info = np.zeros((6, 6))
        info[np.triu_indices(6)] = values[7:28]
        info = info + np.triu(info, 1).T
        loops.append((j, i, pose_matrix(tuple(values[:3]), tuple(values[3:7])), np.linalg.inv(info)))
    wrong = wrong_loops(gt[:, :3, 3], round(wrong_fraction * len(loops)), 5.0, seed, after=len(gt) // 2)
    return BenchStream("demo", "SIMULATED odometry, SIMULATED single-stream demo (Corridor, loops of lite0-gem)",
                       gt, odometry, loops, wrong)


def plaza_stream(wrong_fraction: float, seed: int, spacing_m: float = 1.0) -> BenchStream:
    """The real Plaza2 trajectory with SIMULATED drift and SIMULATED loops (see the module docstring)."""
    import gtsam
    from scipy.io import loadmat

    try:
        gt_rows = loadmat(gtsam.findExampleDataFile("Plaza2_.mat"))["GT"]  # time, x, y, heading
    except (RuntimeError, OSError, KeyError) as exc:
        raise InputError(f"GTSAM's example data Plaza2_.mat is not installed ({exc}); install gtsam from "
                         "PyPI") from None
    keep, travelled, last = [0], np.cumsum(np.r_[0.0, np.linalg.norm(np.diff(gt_rows[:, 1:3], axis=0), axis=1)]), 0.0
    for i in range(1, len(gt_rows)):
        if travelled[i] - last >= spacing_m:
            keep.append(i)
            last = travelled[i]
    rows = gt_rows[keep]
    gt = np.stack([_yaw_pose(x, y, h) for _, x, y, h in rows])
    loops: list[Loop] = [(q, m, None, None) for q, m in revisits(gt, rows[:, 0], 30.0)]
    wrong = wrong_loops(gt[:, :3, 3], round(wrong_fraction * len(loops)), 10.0, seed + 1,
                        after=loops[0][0] if loops else 0)
    return BenchStream("plaza2", "real trajectory (Plaza2 GPS-RTK), SIMULATED odometry drift and loops", gt,
                       simulated_drift(gt, seed), loops, wrong)
