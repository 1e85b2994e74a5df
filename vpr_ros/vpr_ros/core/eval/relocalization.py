"""How good are the relocaliser's fixes: time to the first fix, fix rate, errors, wrong fixes, NEES.

A fix is the robot's pose in the map frame, ``T_map_base`` (4, 4), with a 6x6 covariance in the
convention of ``geometry_msgs/PoseWithCovariance`` as vpr_ros publishes it on ``global_pose``
(docs/relocalization.md): row-major over (x, y, z, rot_x, rot_y, rot_z), the position error in the
map frame (the header's frame) and the rotation error about the map frame's fixed axes, i.e.
``t_true = t_est + dt`` and ``R_true = Exp(dphi) R_est`` (what robot_localization and AMCL read).

The ground truth is the replayed session's poses in the **map frame** (a TUM or KITTI file given to
``vpr-ros replay --gt-poses``); a keyframe "sees a mapped place" when its true pose is within
``radius_m`` and ``max_angle_deg`` of a keyframe of the loaded map. Counting: ``keyframes_to_first_fix``
is 1 when the first keyframe that sees a mapped place gives the fix, 2 for the next one, ...

ROS-free and torch-free; imports only numpy and OpenCV (rotation logarithm).
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from typing import Any, Protocol, Sequence

import cv2
import numpy as np
import numpy.typing as npt

__all__ = ["FixLike", "WRONG_POSITION_M", "WRONG_ROTATION_DEG", "CHI2_95_6DOF", "pose_error_vector",
           "position_error_m", "rotation_error_deg", "fix_nees", "sees_mapped_place", "FixEvaluation",
           "evaluate_fixes", "summarise_fixes"]

F64 = npt.NDArray[np.float64]
WRONG_POSITION_M = 0.5  # a fix this far from the truth, or
WRONG_ROTATION_DEG = 10.0  # this far in rotation, is wrong (issue 21)
CHI2_95_6DOF = 12.591587243743977  # scipy.stats.chi2.ppf(0.95, 6)


class FixLike(Protocol):
    """What the evaluation reads of a fix (core/localization's ``Fix`` has these, and more)."""

    stamp_ns: int
    T_map_base: Any  # (4, 4)
    covariance: Any  # (6, 6)


def _rotation_vector(R: F64) -> F64:
    return cv2.Rodrigues(np.asarray(R, np.float64))[0].reshape(3)


def pose_error_vector(T_est: npt.ArrayLike, T_true: npt.ArrayLike) -> F64:
    """(6,) (dt, dphi): ``t_true - t_est`` and ``Log(R_true R_est^T)``, both in the map frame."""
    A, B = np.asarray(T_est, np.float64), np.asarray(T_true, np.float64)
    return np.concatenate([B[:3, 3] - A[:3, 3], _rotation_vector(B[:3, :3] @ A[:3, :3].T)])


def position_error_m(T_est: npt.ArrayLike, T_true: npt.ArrayLike) -> float:
    return float(np.linalg.norm(np.asarray(T_est, np.float64)[:3, 3] - np.asarray(T_true, np.float64)[:3, 3]))


def rotation_error_deg(T_est: npt.ArrayLike, T_true: npt.ArrayLike) -> float:
    R = np.asarray(T_est, np.float64)[:3, :3].T @ np.asarray(T_true, np.float64)[:3, :3]
    return math.degrees(math.acos(float(np.clip((np.trace(R) - 1.0) / 2.0, -1.0, 1.0))))


def fix_nees(T_est: npt.ArrayLike, T_true: npt.ArrayLike, covariance: npt.ArrayLike) -> float | None:
    """e^T C^-1 e (chi^2 with 6 degrees of freedom if the covariance is right); None when C is not
    positive definite (it cannot be inverted)."""
    C = np.asarray(covariance, np.float64).reshape(6, 6)
    e = pose_error_vector(T_est, T_true)
    try:
        L = np.linalg.cholesky(0.5 * (C + C.T))
    except np.linalg.LinAlgError:
        return None
    z = np.linalg.solve(L, e)
    return float(z @ z)


def sees_mapped_place(truth: Sequence[F64 | None], map_poses: npt.ArrayLike, radius_m: float,
                      max_angle_deg: float = 30.0) -> list[bool]:
    """Per keyframe: is its true pose within ``radius_m`` and ``max_angle_deg`` of a map keyframe's
    pose (both in the map frame)? A keyframe without a true pose sees none."""
    maps = np.asarray(map_poses, np.float64).reshape(-1, 4, 4)
    out = []
    cos_max = math.cos(math.radians(max_angle_deg))
    for T in truth:
        if T is None or not len(maps):
            out.append(False)
            continue
        near = np.linalg.norm(maps[:, :3, 3] - np.asarray(T)[:3, 3], axis=1) <= radius_m
        # trace(R_map^T R) = 1 + 2 cos(angle)
        cos = (np.einsum("nij,ij->n", maps[:, :3, :3], np.asarray(T)[:3, :3]) - 1.0) / 2.0
        out.append(bool(np.any(near & (cos >= cos_max))))
    return out


@dataclasses.dataclass(frozen=True)
class FixEvaluation:
    """One fix against the truth: keyframe index (of the replayed stream; -1: before any), errors
    (None without a true pose), NEES (None without truth or an invertible covariance), wrong,
    and whether that keyframe sees a mapped place."""

    stamp_ns: int
    keyframe: int
    position_error_m: float | None
    rotation_error_deg: float | None
    nees: float | None
    wrong: bool
    sees_map: bool
    kind: str = ""


def evaluate_fixes(fixes: Sequence[FixLike], keyframe_stamps_ns: Sequence[int],
                   truth_at: Sequence[F64 | None], sees_map: Sequence[bool]) -> list[FixEvaluation]:
    """Each fix against the true pose of its keyframe (the last keyframe at or before its stamp).

    ``keyframe_stamps_ns`` (increasing), ``truth_at`` (T_map_base or None) and ``sees_map`` have one
    entry per keyframe of the replayed session."""
    stamps = [int(s) for s in keyframe_stamps_ns]
    if not (len(stamps) == len(truth_at) == len(sees_map)):
        raise ValueError(f"one entry per keyframe: {len(stamps)} stamps, {len(truth_at)} true poses, "
                         f"{len(sees_map)} sees_map flags")
    rows = []
    for fix in fixes:
        k = bisect.bisect_right(stamps, int(fix.stamp_ns)) - 1
        T_true = truth_at[k] if k >= 0 else None
        T_est = np.asarray(fix.T_map_base, np.float64)
        pos = rot = nees = None
        if T_true is not None:
            pos, rot = position_error_m(T_est, T_true), rotation_error_deg(T_est, T_true)
            nees = fix_nees(T_est, T_true, fix.covariance)
        wrong = pos is not None and rot is not None and (pos > WRONG_POSITION_M or rot > WRONG_ROTATION_DEG)
        rows.append(FixEvaluation(int(fix.stamp_ns), k, pos, rot, nees, bool(wrong),
                                  bool(sees_map[k]) if k >= 0 else False, str(getattr(fix, "kind", ""))))
    return rows


def _stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"median": None, "p95": None, "max": None}
    a = np.asarray(values, np.float64)
    return {"median": float(np.median(a)), "p95": float(np.percentile(a, 95)), "max": float(a.max())}


def summarise_fixes(rows: Sequence[FixEvaluation], keyframe_stamps_ns: Sequence[int],
                    sees_map: Sequence[bool]) -> dict[str, Any]:
    """The numbers of metrics.json's ``relocalization`` section (None where there is nothing to take
    a number of: no fix, no keyframe that sees a mapped place, no truth)."""
    stamps = [int(s) for s in keyframe_stamps_ns]
    first_seen = next((k for k, s in enumerate(sees_map) if s), None)
    first_fix = next((r for r in rows if first_seen is not None and r.keyframe >= first_seen), None)
    seen = int(sum(bool(s) for s in sees_map))
    fixed_seen = {r.keyframe for r in rows if r.sees_map}
    measured = [r for r in rows if r.position_error_m is not None]
    nees = [r.nees for r in measured if r.nees is not None]
    summary: dict[str, Any] = {
        "keyframes": len(stamps), "keyframes_seeing_map": seen, "fixes": len(rows),
        "first_keyframe_seeing_map": first_seen,
        "time_to_first_fix_s": (None if first_fix is None or first_seen is None
                                else (first_fix.stamp_ns - stamps[first_seen]) / 1e9),
        "keyframes_to_first_fix": (None if first_fix is None or first_seen is None
                                   else first_fix.keyframe - first_seen + 1),
        "fix_rate": len(fixed_seen) / seen if seen else None,
        "fixes_where_no_mapped_place_is_seen": sum(not r.sees_map for r in rows),
        "fixes_without_ground_truth": len(rows) - len(measured),
        "position_error_m": _stats([r.position_error_m for r in measured]),  # type: ignore[misc]
        "rotation_error_deg": _stats([r.rotation_error_deg for r in measured]),  # type: ignore[misc]
        "wrong_fixes": sum(r.wrong for r in rows),
        "wrong_fix_rule": f"> {WRONG_POSITION_M} m or > {WRONG_ROTATION_DEG} deg from the truth",
        "nees": {"dof": 6, "expected": 6.0, "count": len(nees),
                 "mean": float(np.mean(nees)) if nees else None,
                 "median": float(np.median(nees)) if nees else None,
                 "inside_95": float(np.mean(np.asarray(nees) <= CHI2_95_6DOF)) if nees else None},
        "kinds": {k: sum(r.kind == k for r in rows) for k in sorted({r.kind for r in rows})},
    }
    return summary
