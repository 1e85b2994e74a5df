"""The ``euroc`` stream of ``vpr-ros bench posegraph --live``: a **real** 6-DoF MAV trajectory with SIMULATED
drifted odometry and SIMULATED loops.

Ground truth: EuRoC V1_02_medium (Burri et al., IJRR 2016; Vicon, 83 s, 76 m in a 4 x 5 x 1.2 m room), 10 Hz
rows of it packaged in ``vpr_ros/data/euroc_v102/`` (README there). The EuRoC body is the IMU (x up, z
forward; x is ~20 deg off vertical in flight); it is re-expressed as a REP-103 base (x forward, y left,
z up) by a fixed rotation, so that the drift model's yaw is (about) the heading a visual-inertial odometry
loses and its small tilt the gravity-observable roll and pitch. Positions are unchanged.

* keyframes: what ``loop_closure_node`` keeps with its default ``keyframes.*`` (0.5 m of travel or 15 deg of
  rotation since the last keyframe); the MAV turns on the spot a lot, so rotation alone makes keyframes too;
* odometry: the keyframes' true steps with the noise of ``cli/simulated.py`` (:func:`simulated_drift`);
* loops: each keyframe's nearest keyframe at least ``detector.min_loop_gap_sec`` (20 s) earlier within
  1 m and 30 deg (a view a place recogniser and a verifier can match), measured as the true
  ``T_match_query`` plus seeded noise drawn from the covariance stated with it (1 cm, 0.25 deg per axis:
  the stereo PnP poses of the real EuRoC revisit pairs, estimated forwards and backwards from independent
  stereo points, differ by 10 mm / 0.14 deg and 3 mm / 0.07 deg, i.e. about 7 and 2 mm per estimate;
  their 4-5 cm / 2 deg distance from the dataset's reference poses is the reference's, since the
  essential matrix, without depth, misses it the same way: docs/benchmarks.md, "Stereo point
  uncertainty");
* wrong loops: ``--wrong-fraction`` of that count between keyframes >= 2.5 m apart (half the room), each
  claiming "same place" (identity plus the same noise) with the same confident covariance, as a
  verifier fooled by a look-alike would report it.
"""

from __future__ import annotations

import dataclasses
import math
from importlib import resources
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from vpr_ros.cli.bench.posegraph_data import BenchStream, Loop, revisits, wrong_loops
from vpr_ros.cli.simulated import simulated_drift
from vpr_ros.core.config.schema import DetectorConfig, KeyframeConfig
from vpr_ros.core.errors import InputError
from vpr_ros.core.keyframes import KeyframeSelector
from vpr_ros.core.types import Keyframe

__all__ = ["EUROC_LABEL", "LOOP_SIGMA_M", "LOOP_SIGMA_DEG", "euroc_file", "euroc_ground_truth", "euroc_keyframes",
           "euroc_stream"]

F64 = npt.NDArray[np.float64]
EUROC_LABEL = "real trajectory (EuRoC V1_02 Vicon ground truth), SIMULATED odometry drift and loops"
LOOP_SIGMA_M, LOOP_SIGMA_DEG = 0.01, 0.25
LOOP_MAX_M, LOOP_MAX_DEG = 1.0, 30.0
WRONG_MIN_M = 2.5
# base (x forward, y left, z up) in the EuRoC IMU frame (x up, y right, z forward): columns = base axes
IMU_R_BASE = np.array([[0.0, 0.0, 1.0], [0.0, -1.0, 0.0], [1.0, 0.0, 0.0]])


def euroc_file() -> Path:
    """The packaged 10 Hz ground truth (``vpr_ros/data/euroc_v102/groundtruth_10hz.csv``)."""
    return Path(str(resources.files("vpr_ros") / "data" / "euroc_v102" / "groundtruth_10hz.csv"))


def euroc_ground_truth(path: str | Path | None = None) -> tuple[F64, F64]:
    """(timestamps (N,) seconds, world_T_base (N, 4, 4)) of a EuRoC ground-truth CSV (timestamp ns, x, y, z,
    qw, qx, qy, qz[, ...]; ``#`` comments); default the packaged V1_02 file."""
    from vpr_ros.io.poses import pose_matrix

    path = Path(path) if path is not None else euroc_file()
    try:
        rows = np.loadtxt(path, delimiter=",", comments="#", ndmin=2)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read the EuRoC ground truth ({exc}); reinstall vpr_ros (the file is "
                         "package data) or give a EuRoC state_groundtruth_estimate0/data.csv") from None
    if rows.shape[0] < 2 or rows.shape[1] < 8 or not np.all(np.isfinite(rows[:, :8])):
        raise InputError(f"{path}: expected >= 2 finite rows of timestamp ns, x, y, z, qw, qx, qy, qz")
    base = np.eye(4)
    base[:3, :3] = IMU_R_BASE
    poses = np.stack([pose_matrix(tuple(r[1:4]), (r[5], r[6], r[7], r[4])) @ base for r in rows])
    return (rows[:, 0] - rows[0, 0]) * 1e-9, poses


def euroc_keyframes(poses: F64, config: KeyframeConfig | None = None) -> list[int]:
    """Indices the node's own selector keeps by its travel-or-rotation gate (``core/keyframes.KeyframeSelector``,
    ``keyframes.min_translation_m`` / ``min_rotation_deg``: 0.5 m or 15 deg by default); its time and
    novelty gates are off here (no stamps or descriptors; both are off by default)."""
    gates = dataclasses.replace(config or KeyframeConfig(), min_gap_sec=0.0, max_similarity=1.0)
    selector = KeyframeSelector(gates)
    keep, no_descriptor = [], np.zeros(1, np.float32)
    for i, pose in enumerate(poses):
        if selector.check(0, no_descriptor, pose) is None:
            keep.append(i)
            selector.accept(Keyframe(i, 0, "", "", no_descriptor, pose=pose))
    return keep


def _noisy(pose: F64, rng: np.random.Generator) -> tuple[F64, F64]:
    """``pose`` times a seeded perturbation drawn from the stated covariance (ROS layout, query frame)."""
    sigma_r = math.radians(LOOP_SIGMA_DEG)
    out = pose.copy()
    out[:3, 3] += pose[:3, :3] @ rng.normal(0.0, LOOP_SIGMA_M, 3)
    out[:3, :3] = pose[:3, :3] @ cv2.Rodrigues(rng.normal(0.0, sigma_r, 3))[0]
    return out, np.diag([LOOP_SIGMA_M ** 2] * 3 + [sigma_r ** 2] * 3)


def euroc_stream(wrong_fraction: float, seed: int, path: str | Path | None = None) -> BenchStream:
    """The real EuRoC V1_02 trajectory with SIMULATED drift and SIMULATED loops (see the module docstring)."""
    t_all, poses = euroc_ground_truth(path)
    keep = euroc_keyframes(poses)
    gt, t = poses[keep], t_all[keep]
    rng = np.random.default_rng(seed + 2)
    gap_sec = DetectorConfig().min_loop_gap_sec
    loops: list[Loop] = [(q, m, *_noisy(np.linalg.solve(gt[m], gt[q]), rng))
                         for q, m in revisits(gt, t, gap_sec, LOOP_MAX_M, LOOP_MAX_DEG)]
    wrong = [(q, m, *_noisy(np.eye(4), rng)) for q, m, _, _ in
             wrong_loops(gt[:, :3, 3], round(wrong_fraction * len(loops)), WRONG_MIN_M, seed + 1,
                         after=loops[0][0] if loops else 0)]
    return BenchStream("euroc", EUROC_LABEL, gt, simulated_drift(gt, seed), loops, wrong)
