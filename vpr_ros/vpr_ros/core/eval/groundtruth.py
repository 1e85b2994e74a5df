"""Ground truth for loop closures: from poses (distance) or from a VPR-Bench ``ground_truth_new.npy``.

Evaluation works on :class:`KeyframeRecord` (who, when, which frame of its bag, where). A ground
truth answers two questions: is this (query, match) pair a true loop, and does a query have any
true loop among the keyframes it could have matched (the recall denominator)? Pairs inside the
detector's temporal exclusion window are never true loops: the detector is not allowed to report them.
"""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path
from typing import Callable, Collection, Mapping, Protocol, Sequence

import numpy as np
import numpy.typing as npt

from vpr_ros.core.errors import InputError
from vpr_ros.core.eval.gt_arrays import table_from_array

__all__ = ["KeyframeRecord", "Exclusion", "GroundTruth", "PoseGroundTruth", "IndexGroundTruth",
           "load_vprbench_gt", "read_object_npy"]

NS = 1_000_000_000


@dataclasses.dataclass(frozen=True)
class KeyframeRecord:
    """One keyframe as evaluation sees it.

    frame_index: 0-based position of the keyframe's image in its own bag / traversal (-1 unknown).
    position: (3,) float64 world position of the body, or None without odometry.
    """

    robot_id: str
    session_id: str
    keyframe_id: int
    stamp_ns: int
    frame_index: int = -1
    position: npt.NDArray[np.float64] | None = None

    @property
    def key(self) -> tuple[str, str, int]:
        """(robot_id, session_id, keyframe_id): unique across a map of many sessions."""
        return (self.robot_id, self.session_id, self.keyframe_id)


@dataclasses.dataclass(frozen=True)
class Exclusion:
    """The detector's temporal exclusion rule (``detector.min_loop_gap_sec`` / ``exclude_last_n``)."""

    min_loop_gap_sec: float = 0.0
    exclude_last_n: int = 0

    def excluded(self, query: KeyframeRecord, other: KeyframeRecord) -> bool:
        """True when ``other`` is the query itself or too recent in the query's own stream."""
        if (other.robot_id, other.session_id) != (query.robot_id, query.session_id):
            return False
        if other.stamp_ns > query.stamp_ns - self.min_loop_gap_sec * NS:
            return True
        return query.keyframe_id - other.keyframe_id <= self.exclude_last_n


class GroundTruth(Protocol):
    """What the evaluation needs from a ground truth."""

    def is_true(self, query: KeyframeRecord, match: KeyframeRecord) -> bool:
        """Is reporting ``match`` for ``query`` a correct loop closure?"""

    def has_true(self, query: KeyframeRecord, database: Sequence[KeyframeRecord]) -> bool:
        """Does ``database`` (keyframes in the map when the query arrived) hold a true loop?"""


class PoseGroundTruth:
    """A pair is a true loop when the positions are within ``radius_m`` and it is not excluded.

    ``position_of``: where a keyframe truly was (e.g. from a ground-truth trajectory file, by stamp or
    frame index); default: its odometry position (``KeyframeRecord.position``). None: unknown, never true.
    """

    def __init__(self, radius_m: float, exclusion: Exclusion = Exclusion(),
                 position_of: Callable[[KeyframeRecord], npt.NDArray[np.float64] | None] | None = None) -> None:
        if not radius_m > 0:
            raise InputError(f"gt radius {radius_m!r} m must be positive; give e.g. --gt-radius-m 3")
        self.radius_m = float(radius_m)
        self.exclusion = exclusion
        self.position_of = position_of or (lambda record: record.position)

    def is_true(self, query: KeyframeRecord, match: KeyframeRecord) -> bool:
        q, m = self.position_of(query), self.position_of(match)
        if q is None or m is None or self.exclusion.excluded(query, match):
            return False
        return float(np.linalg.norm(q - m)) <= self.radius_m

    def has_true(self, query: KeyframeRecord, database: Sequence[KeyframeRecord]) -> bool:
        q = self.position_of(query)
        if q is None:
            return False
        usable = [p for p in (self.position_of(m) for m in database if not self.exclusion.excluded(query, m))
                  if p is not None]
        if not usable:
            return False
        return bool(np.any(np.linalg.norm(np.stack(usable) - q, axis=1) <= self.radius_m))


class IndexGroundTruth:
    """Frame-index ground truth: query frame ``q`` matches reference frames ``pairs[q]``.

    A keyframe's query index is ``frame_index - query_offset`` and its reference index
    ``frame_index - ref_offset``. ``query_sessions`` / ``ref_sessions`` restrict which sessions play
    each role (None: any). Multi-session (query bag against a loaded reference map): offsets 0,
    sessions given. Single stream (reference frames 0..n-1, then the query frames): ``query_offset=n``.
    """

    def __init__(self, pairs: Mapping[int, Collection[int]], *, query_offset: int = 0, ref_offset: int = 0,
                 query_sessions: Collection[str] | None = None, ref_sessions: Collection[str] | None = None,
                 exclusion: Exclusion = Exclusion()) -> None:
        self.pairs = {int(q): frozenset(int(r) for r in refs) for q, refs in pairs.items()}
        self.query_offset, self.ref_offset = int(query_offset), int(ref_offset)
        self.query_sessions = None if query_sessions is None else frozenset(query_sessions)
        self.ref_sessions = None if ref_sessions is None else frozenset(ref_sessions)
        self.exclusion = exclusion

    def _refs(self, query: KeyframeRecord) -> frozenset[int]:
        if self.query_sessions is not None and query.session_id not in self.query_sessions:
            return frozenset()
        if query.frame_index < self.query_offset:
            return frozenset()
        return self.pairs.get(query.frame_index - self.query_offset, frozenset())

    def is_true(self, query: KeyframeRecord, match: KeyframeRecord) -> bool:
        if self.ref_sessions is not None and match.session_id not in self.ref_sessions:
            return False
        if match.frame_index < self.ref_offset or self.exclusion.excluded(query, match):
            return False
        return (match.frame_index - self.ref_offset) in self._refs(query)

    def has_true(self, query: KeyframeRecord, database: Sequence[KeyframeRecord]) -> bool:
        return bool(self._refs(query)) and any(self.is_true(query, m) for m in database)


def _numpy_global(name: str) -> object:
    # numpy 2 moved numpy.core to numpy._core; pickles name either, we resolve to the live object
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray  # type: ignore[no-redef]
    return getattr(multiarray, name)


#: The only globals a ground-truth pickle may name: what numpy needs to rebuild an (object) array.
#: Python ints, lists and tuples need no global. Everything else (os.system, builtins.eval, ...) is
#: refused, so a crafted file cannot run code.
_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): lambda: _numpy_global("_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): lambda: _numpy_global("_reconstruct"),
    ("numpy.core.multiarray", "scalar"): lambda: _numpy_global("scalar"),
    ("numpy._core.multiarray", "scalar"): lambda: _numpy_global("scalar"),
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        make = _ALLOWED_GLOBALS.get((module, name))
        if make is None:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only numpy arrays, "
                                         "integers and lists are allowed)")
        return make()

    def persistent_load(self, pid: object) -> object:
        raise pickle.UnpicklingError("refusing a persistent id")


def read_object_npy(path: str | Path) -> npt.NDArray[np.generic]:
    """Read a ``.npy`` file, object arrays included, without executing code from it.

    Plain arrays are read by numpy with pickles disabled; an object array's pickle is unpickled
    with an allow-list of numpy's array constructors (see ``_ALLOWED_GLOBALS``). Raises InputError
    for anything else, naming the file.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                _, _, dtype = np.lib.format.read_array_header_1_0(f, max_header_size=1 << 16)
            elif version == (2, 0):
                _, _, dtype = np.lib.format.read_array_header_2_0(f, max_header_size=1 << 16)
            else:
                raise ValueError(f"unsupported .npy version {version}")
            if not dtype.hasobject:
                f.seek(0)
                return np.load(f, allow_pickle=False)
            array = _ArrayOnlyUnpickler(f).load()
    except OSError as exc:
        raise InputError(f"cannot read ground truth {path}: {exc.strerror or exc}; check the path") from None
    except (ValueError, TypeError, EOFError, IndexError, KeyError, AttributeError, RecursionError,
            MemoryError, pickle.UnpicklingError) as exc:
        raise InputError(f"ground truth {path} is not a VPR-Bench .npy array ({exc}); give a "
                         "VPR-Bench ground_truth_new.npy") from None
    if not isinstance(array, np.ndarray):
        raise InputError(f"ground truth {path} does not hold an array (found {type(array).__name__})")
    return array


def load_vprbench_gt(path: str | Path, form: str = "auto") -> dict[int, frozenset[int]]:
    """Read VPR-Bench ``ground_truth_new.npy`` -> {query: {ref, ...}}.

    Rows ``[query_idx, [ref_idx, ...]]`` (VPR-Bench's own form; a plain (N, 2) integer array is read
    as rows [query, ref]), or a per-query (N,) object array, or a loop matrix: see
    :func:`gt_arrays.table_from_array`, which refuses any other shape. The file is read by
    :func:`read_object_npy`, which never executes code from the file.
    """
    array = read_object_npy(path)
    if form == "auto" and array.dtype != object and array.ndim == 2 and array.shape[1] == 2 and not (
            array.shape[0] == 2 and np.isin(array, (0, 1)).all()):
        form = "vprbench"
    return table_from_array(array, str(path), form).pairs
