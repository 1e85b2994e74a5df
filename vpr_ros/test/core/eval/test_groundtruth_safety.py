"""VPR-Bench ground truth is read without executing anything from the file (issue 8)."""

import os
import pickle

import numpy as np
import pytest

from conftest import CORRIDOR
from vpr_ros.core.errors import InputError
from vpr_ros.core.eval.groundtruth import load_vprbench_gt, read_object_npy


class _CreatesFile:
    """A pickle payload: unpickling it calls ``open(path, "w")``, i.e. creates a file."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


class _RunsShell:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


@pytest.mark.parametrize("payload", [_CreatesFile, _RunsShell])
def test_crafted_ground_truth_is_refused_and_runs_nothing(tmp_path, payload):
    marker = tmp_path / "pwned"
    rows = np.empty((2, 2), dtype=object)
    rows[0] = [0, [1, 2]]
    rows[1] = [1, payload(marker)]
    np.save(tmp_path / "ground_truth_new.npy", rows, allow_pickle=True)
    with pytest.raises(InputError, match="refusing to load"):
        load_vprbench_gt(tmp_path / "ground_truth_new.npy")
    assert not marker.exists()


def test_embedded_corridor_ground_truth_loads_as_before():
    path = CORRIDOR / "ground_truth_new.npy"
    trusted = np.load(path, allow_pickle=True)  # our own packaged file: the reference reading
    expected = {int(q): frozenset(int(r) for r in np.atleast_1d(refs)) for q, refs in trusted}
    pairs = load_vprbench_gt(path)
    assert pairs == expected and len(pairs) == 111
    array = read_object_npy(path)
    assert array.shape == trusted.shape and array.dtype == trusted.dtype


def test_numpy_scalars_arrays_and_plain_int_arrays_are_accepted(tmp_path):
    rows = np.empty((2, 2), dtype=object)
    rows[0] = [np.int64(0), [np.int64(3)]]
    rows[1] = [1, np.array([4, 5])]
    np.save(tmp_path / "objects.npy", rows, allow_pickle=True)
    assert load_vprbench_gt(tmp_path / "objects.npy") == {0: {3}, 1: {4, 5}}
    np.save(tmp_path / "ints.npy", np.array([[0, 7], [1, 8]]))
    assert load_vprbench_gt(tmp_path / "ints.npy") == {0: {7}, 1: {8}}


def test_a_bare_pickle_of_a_foreign_class_is_refused(tmp_path):
    # a valid .npy header for an object array followed by a pickle of something that is not numpy's
    rows = np.empty(1, dtype=object)
    rows[0] = [0, [1]]
    np.save(tmp_path / "gt.npy", rows, allow_pickle=True)
    data = (tmp_path / "gt.npy").read_bytes()
    header_end = data.index(b"\n") + 1
    (tmp_path / "gt.npy").write_bytes(data[:header_end] + pickle.dumps(pytest.MonkeyPatch()))
    with pytest.raises(InputError, match="refusing to load"):
        load_vprbench_gt(tmp_path / "gt.npy")


@pytest.mark.parametrize("content", ["random", "truncated", "empty", "rows"])
def test_damaged_ground_truth_is_an_input_error(tmp_path, content):
    path = tmp_path / "gt.npy"
    good = (CORRIDOR / "ground_truth_new.npy").read_bytes()
    if content == "random":
        path.write_bytes(np.random.default_rng(3).integers(0, 256, 4000, np.uint8).tobytes())
    elif content == "truncated":
        path.write_bytes(good[:len(good) // 2])
    elif content == "empty":
        path.write_bytes(b"")
    else:
        np.save(path, np.array([1.5, 2.5]))  # not rows of [query, refs]
    with pytest.raises(InputError, match="gt.npy"):
        load_vprbench_gt(path)
