"""Index ground truth from arrays: loop matrices, VPR-Bench rows and per-query lists -> {query: refs}.

Three forms (docs/replay.md, "Ground truth"):

- ``matrix``: (N, N), entry (i, j) true/non-zero = frames i and j are the same place (RTAB-Map's
  ``samples_GT.bmp``, a boolean or 0/1 ``.npy``, a CSV of 0/1); N is the number of frames.
- ``vprbench``: (N, 2) object array of rows ``[query_idx, [ref_idx, ...]]`` (VPR-Bench
  ``ground_truth_new.npy``).
- ``lists``: (N,) object array whose element q is the list of reference indices of query q.

A file whose shape fits none of them, or more than one, is refused with the shapes expected, never
guessed: a per-query array read as rows gave wrong precision without a word.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import numpy.typing as npt

from vpr_ros.core.errors import InputError

__all__ = ["INDEX_FORMS", "IndexTable", "table_from_array", "matrix_table", "FORMS_HELP"]

INDEX_FORMS = ("matrix", "vprbench", "lists")
FORMS_HELP = ("a square (N, N) loop matrix of 0/1 (N = frames), VPR-Bench rows (N, 2) "
              "[query_idx, [ref_idx, ...]], or a per-query (N,) object array of integer lists")


@dataclasses.dataclass(frozen=True)
class IndexTable:
    """form: one of INDEX_FORMS; pairs: query index -> reference indices; size: N of a matrix, else None."""

    form: str
    pairs: dict[int, frozenset[int]]
    size: int | None = None

    @property
    def max_index(self) -> int:
        """The largest query or reference index (-1 when there is none)."""
        return max([-1, *self.pairs, *(r for refs in self.pairs.values() for r in refs)])


def _index(value: Any, source: str, where: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        if isinstance(value, (float, np.floating)) and float(value).is_integer():
            value = int(value)  # 3.0 in a float array is frame 3
        else:
            raise InputError(f"ground truth {source}: {where} is {value!r} ({type(value).__name__}), not a frame "
                             f"index; expected {FORMS_HELP}")
    if int(value) < 0:
        raise InputError(f"ground truth {source}: {where} is {int(value)}, out of range (frame indices start at 0)")
    return int(value)


def _index_list(value: Any, source: str, where: str) -> frozenset[int]:
    if isinstance(value, np.ndarray) and value.ndim <= 1:
        items = value.reshape(-1).tolist() if value.dtype != object else list(value.reshape(-1))
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        raise InputError(f"ground truth {source}: {where} is {type(value).__name__} {value!r}, not a list of "
                         f"reference indices; expected {FORMS_HELP}")
    return frozenset(_index(v, source, f"{where}[{k}]") for k, v in enumerate(items))


def matrix_table(matrix: npt.NDArray[Any], source: str, *, nonzero: bool = False) -> IndexTable:
    """(N, N) -> pairs. ``nonzero``: any non-zero value is a loop (images); else values must be 0/1."""
    m = np.asarray(matrix)
    if m.ndim == 3 and nonzero:  # a colour image: a pixel is set when any channel is
        m = m.any(axis=2)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.size == 0:
        raise InputError(f"ground truth {source}: a loop matrix must be square (N, N), N = number of frames; "
                         f"found shape {m.shape}")
    if m.dtype == object or not (np.issubdtype(m.dtype, np.number) or m.dtype == bool):
        raise InputError(f"ground truth {source}: a loop matrix holds numbers, found dtype {m.dtype}")
    if not nonzero and m.dtype != bool and not np.isin(m, (0, 1)).all():
        raise InputError(f"ground truth {source}: a loop matrix holds 0/1 (or true/false); found values such "
                         f"as {m[~np.isin(m, (0, 1))].flat[0]!r}")
    loops = m != 0
    return IndexTable("matrix", {i: frozenset(np.flatnonzero(loops[i]).tolist()) for i in range(m.shape[0])},
                      int(m.shape[0]))


def _rows_table(array: npt.NDArray[Any], source: str) -> IndexTable:
    if array.ndim != 2 or array.shape[1] != 2:
        raise InputError(f"ground truth {source}: VPR-Bench rows of [query_idx, [ref_idx, ...]] are an (N, 2) "
                         f"array; found shape {array.shape}")
    pairs: dict[int, frozenset[int]] = {}
    for k, (query, refs) in enumerate(array):
        q = _index(query, source, f"row {k} query")
        if q in pairs:
            raise InputError(f"ground truth {source}: query {q} appears in two rows (row {k}); one row per query")
        scalar = isinstance(refs, (int, np.integer)) and not isinstance(refs, (bool, np.bool_))
        pairs[q] = frozenset([_index(refs, source, f"row {k} refs")]) if scalar else \
            _index_list(refs, source, f"row {k} refs")
    return IndexTable("vprbench", pairs)


def _lists_table(array: npt.NDArray[Any], source: str) -> IndexTable:
    if array.ndim == 2 and array.dtype != object:
        return IndexTable("lists", {q: _index_list(row, source, f"query {q}") for q, row in enumerate(array)})
    if array.ndim != 1:
        raise InputError(f"ground truth {source}: per-query lists are an (N,) object array (element q = the "
                         f"reference indices of query q); found shape {array.shape}")
    return IndexTable("lists", {q: _index_list(refs, source, f"element {q}") for q, refs in enumerate(array)})


def _is_sequence(value: Any) -> bool:
    return isinstance(value, (list, tuple)) or (isinstance(value, np.ndarray) and value.ndim == 1)


def _auto_form(array: npt.NDArray[Any], source: str) -> str:
    if array.dtype == object:
        if array.ndim == 1:
            return "lists"
        if array.ndim == 2 and array.shape[1] == 2 and any(_is_sequence(v) for v in array[:, 1]):
            return "vprbench"
        if array.ndim == 2 and array.shape[1] == 2:
            raise InputError(f"ground truth {source}: an (N, 2) object array of plain integers is ambiguous "
                             "(VPR-Bench rows [query, ref] or per-query lists of two refs); give --gt-format "
                             "vprbench or --gt-format lists")
    elif array.ndim == 2 and array.shape[0] == array.shape[1] and (
            array.dtype == bool or np.isin(array, (0, 1)).all()):
        return "matrix"
    elif array.ndim == 2 and array.shape[1] == 2:
        raise InputError(f"ground truth {source}: an (N, 2) integer array is ambiguous (VPR-Bench rows "
                         "[query, ref] or per-query lists of two refs); give --gt-format vprbench or "
                         "--gt-format lists")
    elif array.ndim == 2:
        raise InputError(f"ground truth {source}: a loop matrix must be square (N, N) of 0/1, N = number of "
                         f"frames; found shape {array.shape} (per-query lists of equal length: give "
                         "--gt-format lists)")
    raise InputError(f"ground truth {source}: an array of shape {array.shape} and dtype {array.dtype} is not "
                     f"rows of [query_idx, [ref_idx, ...]] nor another form; expected {FORMS_HELP}")


def table_from_array(array: npt.NDArray[Any], source: str, form: str = "auto") -> IndexTable:
    """Read one of INDEX_FORMS from an array (``form`` "auto": from its shape and dtype; see module doc)."""
    if form == "auto":
        form = _auto_form(array, source)
    if form == "matrix":
        return matrix_table(array, source)
    if form == "vprbench":
        return _rows_table(array, source)
    if form == "lists":
        return _lists_table(array, source)
    raise InputError(f"ground truth format {form!r} is not one of {', '.join(INDEX_FORMS)}")
