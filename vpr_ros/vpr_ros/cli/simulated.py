"""A SIMULATED trajectory for the single-stream Corridor demo (the Corridor dataset has no poses).

The robot walks a straight corridor along +x, one camera frame every ``spacing_m`` (lap 1 = the
reference traversal), turns around, walks back ``return_offset_m`` to the side without filming,
turns again and walks the corridor a second time ``lane_offset_m`` to the side (lap 2 = the query
traversal; query frame i is at the place of reference frame i, as the VPR-Bench ground truth of the
Corridor says, within +-2 frames; the offset also keeps the ground truth from being one straight
line, which SE(3) alignment cannot use).

Odometry integrates every step of that path (the unfilmed return included) with seeded noise: a
translation error proportional to the step, yaw and a little roll/pitch noise per metre and per
degree turned. Everything made from it is labelled "simulated".
"""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np
import numpy.typing as npt

__all__ = ["SimulatedRun", "simulated_trajectory", "simulated_drift", "SIMULATED_LABEL"]

F64 = npt.NDArray[np.float64]
SIMULATED_LABEL = "simulated"


@dataclasses.dataclass(frozen=True)
class SimulatedRun:
    """ground_truth / odometry: (N, 4, 4) world_T_body of the N filmed frames (lap 1 then lap 2)."""

    ground_truth: F64
    odometry: F64
    num_ref: int
    spacing_m: float
    label: str = SIMULATED_LABEL


def _pose(x: float, y: float, yaw: float) -> F64:
    p = np.eye(4)
    p[:2, :2] = [[math.cos(yaw), -math.sin(yaw)], [math.sin(yaw), math.cos(yaw)]]
    p[:2, 3] = x, y
    return p


def _path(num_ref: int, num_query: int, spacing_m: float, return_offset_m: float,
          lane_offset_m: float) -> tuple[list[F64], list[int]]:
    """Dense ground-truth path and the indices in it of the filmed frames."""
    path: list[F64] = []
    filmed: list[int] = []
    for i in range(num_ref):
        filmed.append(len(path))
        path.append(_pose(i * spacing_m, 0.0, 0.0))
    end = (num_ref - 1) * spacing_m
    # Unfilmed return: turn left in two 90-degree steps while side-stepping, walk back, turn again.
    path.append(_pose(end, return_offset_m / 2, math.pi / 2))
    path.append(_pose(end, return_offset_m, math.pi))
    steps = max(1, int(round(end / spacing_m)))
    for k in range(1, steps):
        path.append(_pose(end - k * end / steps, return_offset_m, math.pi))
    path.append(_pose(0.0, return_offset_m, math.pi))
    path.append(_pose(0.0, (return_offset_m + lane_offset_m) / 2, 3 * math.pi / 2))
    for i in range(num_query):
        filmed.append(len(path))
        path.append(_pose(i * spacing_m, lane_offset_m, 0.0))
    return path, filmed


def simulated_drift(ground_truth: F64, seed: int, translation_noise: float = 0.02, yaw_noise_deg_per_m: float = 0.3,
                    tilt_noise_deg_per_m: float = 0.03, turn_noise: float = 0.01) -> F64:
    """SIMULATED odometry of a ground-truth path (N, 4, 4): every step with seeded noise (per-axis
    translation sigma = fraction of the step; yaw and tilt sigma per metre; yaw sigma per radian turned)."""
    rng = np.random.default_rng(seed)
    odom = [ground_truth[0].copy()]
    for a, b in zip(ground_truth[:-1], ground_truth[1:]):
        step = np.linalg.solve(a, b)
        dist = float(np.linalg.norm(step[:3, 3]))
        turn = abs(math.atan2(step[1, 0], step[0, 0]))
        noisy = step.copy()
        noisy[:3, 3] += rng.normal(0.0, translation_noise * dist, 3)
        tilt = math.radians(tilt_noise_deg_per_m) * dist
        yaw = math.radians(yaw_noise_deg_per_m) * dist + turn_noise * turn
        noisy[:3, :3] = noisy[:3, :3] @ cv2.Rodrigues(np.array([rng.normal(0, tilt), rng.normal(0, tilt),
                                                                  rng.normal(0, yaw)]))[0]
        odom.append(odom[-1] @ noisy)
    return np.stack(odom)


def simulated_trajectory(num_ref: int, num_query: int, *, spacing_m: float = 1.0, seed: int = 0,
                         translation_noise: float = 0.02, yaw_noise_deg_per_m: float = 0.3,
                         tilt_noise_deg_per_m: float = 0.03, turn_noise: float = 0.01,
                         return_offset_m: float = 3.0, lane_offset_m: float = 0.25) -> SimulatedRun:
    """SIMULATED two-lap corridor run: ground truth and seeded noisy odometry of every filmed frame.

    translation_noise: per-axis translation sigma as a fraction of each step; yaw/tilt noise: sigma
    in degrees per metre of the step; turn_noise: yaw sigma as a fraction of the angle turned.
    """
    path, filmed = _path(num_ref, num_query, spacing_m, return_offset_m, lane_offset_m)
    odom = simulated_drift(np.stack(path), seed, translation_noise, yaw_noise_deg_per_m, tilt_noise_deg_per_m,
                           turn_noise)
    gt = np.stack([path[i] for i in filmed])
    return SimulatedRun(gt, np.stack([odom[i] for i in filmed]), num_ref, spacing_m)
