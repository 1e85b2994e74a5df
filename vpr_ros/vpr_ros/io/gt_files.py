"""Ground-truth files of every accepted form, read for ``vpr-ros replay --gt`` (docs/replay.md).

- ``matrix``: an image (PNG/BMP/PGM/TIFF; pixel (i, j) non-zero: frames i and j are the same place,
  RTAB-Map's ``samples_GT.bmp``), a bool or 0/1 ``.npy`` (N, N), CSV/text rows of 0/1;
- ``vprbench``: ``.npy`` (N, 2) object array of rows ``[query_idx, [ref_idx, ...]]`` (VPR-Bench
  ``ground_truth_new.npy``);
- ``lists``: ``.npy`` (N,) object array (element q: reference indices of query q), or text lines
  ``query: ref ref ...``;
- ``tum`` / ``kitti``: trajectories (io/pose_files.py), used with a radius.

``auto`` tells them apart by extension and content and refuses what is ambiguous or mis-shaped,
naming the shape it expected.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np

from vpr_ros.core.errors import InputError
from vpr_ros.core.eval.groundtruth import read_object_npy
from vpr_ros.core.eval.gt_arrays import FORMS_HELP, INDEX_FORMS, IndexTable, matrix_table, table_from_array
from vpr_ros.io.pose_files import POSE_FORMATS, PoseFile, number_rows, read_pose_file

__all__ = ["GT_FORMATS", "GroundTruthFile", "read_ground_truth"]

GT_FORMATS = ("auto", *INDEX_FORMS, *POSE_FORMATS)
IMAGE_SUFFIXES = (".png", ".bmp", ".pgm", ".pbm", ".tif", ".tiff")


@dataclasses.dataclass(frozen=True)
class GroundTruthFile:
    """One read ground-truth file: an index table (matrix, vprbench, lists) or a trajectory (tum, kitti)."""

    path: Path
    table: IndexTable | None = None
    poses: PoseFile | None = None

    @property
    def form(self) -> str:
        return self.table.form if self.table is not None else self.poses.format  # type: ignore[union-attr]


def _image_matrix(path: Path) -> IndexTable:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise InputError(f"ground truth {path} cannot be read as an image; give a PNG/BMP loop matrix")
    return matrix_table(image, str(path), nonzero=True)


def _text_lists(path: Path, lines: list[str]) -> IndexTable:
    pairs: dict[int, frozenset[int]] = {}
    for number, line in enumerate(lines, 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        query, sep, refs = line.partition(":")
        try:
            if not sep:
                raise ValueError("no ':'")
            q = int(query)
            r = frozenset(int(v) for v in refs.replace(",", " ").split())
        except ValueError:
            raise InputError(f"ground truth {path}, line {number}: {line!r} is not 'query: ref ref ...' with "
                             "frame indices") from None
        if q < 0 or any(v < 0 for v in r):
            raise InputError(f"ground truth {path}, line {number}: index out of range (frame indices start at 0)")
        if q in pairs:
            raise InputError(f"ground truth {path}, line {number}: query {q} is listed twice; one line per query")
        pairs[q] = r
    if not pairs:
        raise InputError(f"ground truth {path} lists no query; write lines 'query: ref ref ...'")
    return IndexTable("lists", pairs)


def _text(path: Path, form: str) -> GroundTruthFile:
    if form in POSE_FORMATS:
        return GroundTruthFile(path, poses=read_pose_file(path, form))
    rows = number_rows(path, "ground truth")
    text_lines = path.read_text(encoding="utf-8").splitlines()
    if form == "lists" or (form == "auto" and any(":" in line.split("#", 1)[0] for line in text_lines)):
        return GroundTruthFile(path, table=_text_lists(path, text_lines))
    if form == "vprbench":
        raise InputError(f"ground truth {path}: the vprbench form is a .npy file; for text give 'query: ref ...' "
                         "lines (--gt-format lists)")
    widths = {len(fields) for _, fields in rows}
    if not rows or len(widths) != 1:
        raise InputError(f"ground truth {path}: rows of different lengths ({sorted(widths)}) or none; expected "
                         "a square 0/1 matrix, 'query: ref ...' lines, or a TUM/KITTI trajectory")
    try:
        values = np.array([[float(v) for v in fields] for _, fields in rows])
    except ValueError:
        raise InputError(f"ground truth {path} holds something that is not a number; expected a square 0/1 "
                         "matrix, 'query: ref ...' lines, or a TUM/KITTI trajectory") from None
    binary = np.isin(values, (0, 1)).all()
    square = values.shape[0] == values.shape[1]
    if form == "auto" and values.shape[1] in (8, 12) and not (binary and square):
        return GroundTruthFile(path, poses=read_pose_file(path))
    if form == "auto" and values.shape[1] in (8, 12):
        raise InputError(f"ground truth {path}: {values.shape[0]} rows of {values.shape[1]} 0/1 values could be a "
                         "loop matrix or a trajectory; give --gt-format matrix, tum or kitti")
    return GroundTruthFile(path, table=matrix_table(values.astype(np.int64) if binary else values, str(path)))


def read_ground_truth(path: str | Path, form: str = "auto") -> GroundTruthFile:
    """Read a ground-truth file in ``form`` (one of GT_FORMATS); InputError names the file and the problem."""
    path = Path(path)
    if form not in GT_FORMATS:
        raise InputError(f"ground truth format {form!r} is not one of {', '.join(GT_FORMATS)}")
    if not path.is_file():
        raise InputError(f"cannot read ground truth {path}: no such file; check the path")
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        if form not in ("auto", "matrix"):
            raise InputError(f"ground truth {path} is an image: a loop matrix, not {form}")
        return GroundTruthFile(path, table=_image_matrix(path))
    if suffix == ".npy":
        if form in POSE_FORMATS:
            raise InputError(f"ground truth {path} is a .npy array; trajectories are TUM/KITTI text files")
        return GroundTruthFile(path, table=table_from_array(read_object_npy(path), str(path), form))
    with open(path, "rb") as f:
        if f.read(6) == b"\x93NUMPY":
            return GroundTruthFile(path, table=table_from_array(read_object_npy(path), str(path), form))
    try:
        return _text(path, form)
    except UnicodeDecodeError:
        raise InputError(f"ground truth {path} is neither text, .npy nor an image; expected {FORMS_HELP}, "
                         "or a TUM/KITTI trajectory") from None
