"""Trajectory files: TUM (``t x y z qx qy qz qw``) and KITTI (12 numbers, row-major 3x4 per line).

TUM (the TUM RGB-D tools, ``evo``): one pose per line, ``timestamp`` in seconds, position, unit
quaternion (x, y, z, w). KITTI odometry ground truth: line k is the pose of image k as the first
three rows of the 4x4 ``world_T_cam``. Both: ``#`` comments and blank lines are skipped; numbers
may be separated by spaces, tabs or commas.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import numpy.typing as npt

from vpr_ros.core.errors import InputError
from vpr_ros.io.poses import pose_matrix

__all__ = ["PoseFile", "read_pose_file", "POSE_FORMATS"]

F64 = npt.NDArray[np.float64]
POSE_FORMATS = ("tum", "kitti")
_COLUMNS = {"tum": 8, "kitti": 12}


@dataclasses.dataclass(frozen=True)
class PoseFile:
    """format: "tum" or "kitti"; poses: (4, 4) world_T_body per line; stamps_ns: TUM stamps, or None."""

    path: Path
    format: str
    poses: list[F64]
    stamps_ns: list[int] | None

    def positions(self) -> F64:
        """(N, 3) float64 positions, one per line."""
        return np.array([p[:3, 3] for p in self.poses], np.float64).reshape(-1, 3)


def number_rows(path: str | Path, what: str) -> list[tuple[int, list[str]]]:
    """(line number, fields) of each non-blank, non-comment line of a text file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{what} {path} is not a text file; give a text file") from None
    except OSError as exc:
        raise InputError(f"cannot read {what} {path}: {exc.strerror or exc}; check the path") from None
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].replace(",", " ").strip()
        if line:
            rows.append((number, line.split()))
    return rows


def _floats(path: Path, number: int, fields: list[str]) -> list[float]:
    try:
        values = [float(v) for v in fields]
    except ValueError:
        raise InputError(f"pose file {path}, line {number}: {' '.join(fields)!r} is not all numbers") from None
    if not all(np.isfinite(values)):
        raise InputError(f"pose file {path}, line {number}: a value is not finite")
    return values


def read_pose_file(path: str | Path, format: str = "auto") -> PoseFile:
    """Read a TUM or KITTI trajectory; ``format`` "auto" tells them apart by the column count (8 or 12).

    Raises InputError naming the file and line for anything else (another column count, a
    non-number, a zero quaternion, TUM stamps that go backwards, no pose at all).
    """
    path = Path(path)
    rows = number_rows(path, "pose file")
    if not rows:
        raise InputError(f"pose file {path} holds no pose; give a TUM (t x y z qx qy qz qw) or KITTI "
                         "(12 numbers per line) file")
    if format == "auto":
        format = next((f for f, n in _COLUMNS.items() if len(rows[0][1]) == n), "")
        if not format:
            raise InputError(f"pose file {path}, line {rows[0][0]}: {len(rows[0][1])} numbers; expected 8 "
                             "(TUM: t x y z qx qy qz qw) or 12 (KITTI: row-major 3x4 matrix)")
    if format not in _COLUMNS:
        raise InputError(f"pose format {format!r} is not one of {', '.join(POSE_FORMATS)}")
    poses, stamps = [], []
    for number, fields in rows:
        if len(fields) != _COLUMNS[format]:
            raise InputError(f"pose file {path}, line {number}: {len(fields)} numbers; a {format.upper()} "
                             f"line has {_COLUMNS[format]}")
        v = _floats(path, number, fields)
        if format == "kitti":
            matrix = np.eye(4)
            matrix[:3, :] = np.reshape(v, (3, 4))
            poses.append(matrix)
            continue
        try:
            poses.append(pose_matrix((v[1], v[2], v[3]), (v[4], v[5], v[6], v[7])))
        except ValueError as exc:
            raise InputError(f"pose file {path}, line {number}: {exc}") from None
        stamps.append(int(round(v[0] * 1e9)))
        if len(stamps) > 1 and stamps[-1] <= stamps[-2]:
            raise InputError(f"pose file {path}, line {number}: TUM timestamp {v[0]} is not after the "
                             "previous line's; sort the file by time")
    return PoseFile(path, format, poses, stamps if format == "tum" else None)
