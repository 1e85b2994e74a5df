"""Absolute trajectory error (ATE) with ``evo`` as a library.

The estimate is aligned to the reference before the error is taken (Umeyama): SE(3) when the
estimate has metric scale (wheel/visual-inertial/stereo odometry), Sim(3) when it does not
(monocular). ATE = RMSE of the translation part of the aligned absolute pose error, metres.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import numpy.typing as npt
from evo.core import metrics
from evo.core.geometry import GeometryException
from evo.core.trajectory import PosePath3D

from vpr_ros.core.errors import InputError

__all__ = ["AteResult", "absolute_trajectory_error"]

F64 = npt.NDArray[np.float64]


@dataclasses.dataclass(frozen=True)
class AteResult:
    """ATE statistics in metres; alignment "se3" or "sim3"; scale: the Sim(3) scale (1.0 for SE(3))."""

    rmse_m: float
    mean_m: float
    max_m: float
    alignment: str
    scale: float
    aligned: F64  # (N, 4, 4) the estimate after alignment (for plots)


def absolute_trajectory_error(reference: F64, estimate: F64, *, scale_known: bool = True) -> AteResult:
    """ATE of ``estimate`` against ``reference``, both (N, 4, 4) world_T_body of the same N instants."""
    ref = np.asarray(reference, np.float64)
    est = np.asarray(estimate, np.float64)
    if ref.shape != est.shape or ref.ndim != 3 or ref.shape[1:] != (4, 4) or len(ref) < 3:
        raise InputError(f"ATE needs two (N, 4, 4) pose arrays of the same N >= 3; got {ref.shape} "
                         f"and {est.shape}")
    traj_ref = PosePath3D(poses_se3=list(ref))
    traj_est = copy.deepcopy(PosePath3D(poses_se3=list(est)))
    try:
        _, _, scale = traj_est.align(traj_ref, correct_scale=not scale_known)
    except GeometryException as exc:
        raise InputError(f"cannot align the trajectories ({exc}): the reference positions lie on one "
                         "line or point; ATE needs a trajectory that spans a plane") from exc
    ape = metrics.APE(metrics.PoseRelation.translation_part)
    ape.process_data((traj_ref, traj_est))
    stats = ape.get_all_statistics()
    return AteResult(float(stats["rmse"]), float(stats["mean"]), float(stats["max"]),
                     "se3" if scale_known else "sim3", float(scale), np.stack(traj_est.poses_se3))
