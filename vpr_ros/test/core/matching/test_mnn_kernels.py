"""The compiled row pass (``core.matching.mnn_kernels``) and the numpy peel against plain numpy reductions."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from vpr_ros.core.matching import mnn_batched, mnn_kernels, mnn_rows


def _block(rng, dtype, rows, n1):
    if dtype == np.int16:  # bf16 bit patterns of values in [-1, 1], both signs
        return (rng.standard_normal((rows, n1)).astype(np.float32) * 0.3).view(np.int32) >> 16
    return rng.standard_normal((rows, n1)).astype(np.float32)


@pytest.mark.parametrize("dtype", [np.int16, np.float32])
@pytest.mark.parametrize("rows,n1", [(32, 3721), (70, 400), (5, 63), (33, 64), (3, 1)])
def test_scan_block_matches_numpy(dtype, rows, n1):
    assert mnn_kernels.AVAILABLE
    rng = np.random.default_rng(rows * 1000 + n1)
    s = np.ascontiguousarray(_block(rng, dtype, rows, n1).astype(dtype))
    s[1 % rows, n1 // 2] = s[1 % rows].max()  # a tie for the maximum: the first index wins
    if dtype == np.int16:  # a row of negative values only: its threshold is the floor, all compete
        s[-1] = -np.abs(s[-1]) - 1
    group = 32
    if dtype == np.int16:  # thresholds by table: 40 keys below the maximum; row maxima < 0 take all
        table = np.where(np.arange(65536) < 32768, np.arange(65536) - 40, -32768).astype(np.int16)
        want_thr = table[s.max(axis=1).view(np.uint16)].astype(np.float64)
        margin = 0.0
    else:
        table, margin = np.zeros(0, np.int16), 0.5
        want_thr = s.max(axis=1).astype(np.float64) - margin
    cmax = np.empty((2 + rows // group, n1), dtype)
    rowmax, arg = np.empty(rows, dtype), np.empty(rows, np.int64)
    small = [np.empty(2, np.int64), np.empty(2, np.int64), np.empty(2, dtype)]  # too small: count only
    n = mnn_kernels.scan_block(s, cmax, 1, group, table, margin, rowmax, arg, *small)
    out = [np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, dtype)]
    assert mnn_kernels.scan_block(s, cmax, 1, group, table, margin, rowmax, arg, *out) == n
    for g in range(-(-rows // group)):
        assert np.array_equal(cmax[1 + g], s[g * group:(g + 1) * group].max(axis=0))
    assert np.array_equal(rowmax, s.max(axis=1)) and np.array_equal(arg, s.argmax(axis=1))
    hit = s.astype(np.float64) >= want_thr[:, None]
    many = hit.sum(axis=1) > 1
    assert many.any() or n1 == 1
    assert dtype == np.float32 or hit[-1].all()
    want_r, want_j = np.nonzero(hit & many[:, None])
    got = sorted(zip(out[0].tolist(), out[1].tolist()))
    assert got == sorted(zip(want_r.tolist(), want_j.tolist()))
    assert np.array_equal(out[2], s[out[0], out[1]])


def test_settle_groups_in_any_order_equals_numpy_settle(monkeypatch):
    """The compiled settle sorts groups that arrive out of order and gives numpy's winners."""
    rng = np.random.default_rng(3)
    f0 = rng.standard_normal((50, 16)).astype(np.float32)
    f1 = np.concatenate([f0[:20], f0[:20] + np.float32(1e-7), rng.standard_normal((30, 16)).astype(np.float32)])
    groups = rng.integers(0, 25, 400)
    rows, cols = groups % 50, rng.integers(0, 70, 400)
    e32 = 2 * 16 * 2.0 ** -24 * 30
    got = mnn_batched._settle(f0, f1, groups, rows, cols, cols, e32)
    monkeypatch.setattr(mnn_kernels, "AVAILABLE", False)
    want = mnn_batched._settle(f0, f1, groups, rows, cols, cols, e32)
    assert sorted(zip(groups[got], cols[got])) == sorted(zip(groups[want], cols[want]))
    assert len(np.unique(groups[got])) == len(np.unique(groups))


@pytest.mark.parametrize("width,n1", [(61, 3721), (20, 400), (1, 5), (2, 4), (3, 9), (1, 1)])
def test_neighbour_offsets_distinct_and_nonzero(width, n1):
    offs = mnn_rows.neighbour_offsets(width, n1) % max(n1, 1)
    assert len(set(offs.tolist())) == len(offs) and (n1 == 1 or 0 not in offs)


@pytest.mark.parametrize("shape", [(400, 400), (1, 7), (9, 1), (33, 70)])
def test_column_argmax_is_numpys(shape):
    rng = np.random.default_rng(shape[0])
    s = rng.integers(-3, 3, shape).astype(np.float32)  # many exact ties
    s[0, 0] = -0.0
    cols = np.empty(shape[1], np.int64)
    mnn_kernels.column_argmax(s, cols)
    assert np.array_equal(cols, s.argmax(axis=0))


_WARM_CHECK = """
import json
from vpr_ros.cli.bench.verify import simulated_local_maps
from vpr_ros.core.matching import mnn_batched, mnn_jit
from vpr_ros.models.backends.mnn_screen import configured_screen

names = ("scan_block", "settle_groups", "max_norms", "column_argmax", "_near_groups", "_settle_columns")
def signatures():
    return {name: len(getattr(mnn_jit, name).signatures) for name in names}
screen = configured_screen("bf16")
mnn_batched.warm(screen)
before = signatures()
q, cands = simulated_local_maps(40, 40, 32, 2)  # 1600 x 1600: more than one block, the screens run
for gemm in (screen, None):
    mnn_batched.mnn_pairs_many(q, cands, gemm)
small_q, small = simulated_local_maps(8, 8, 16, 2)
mnn_batched.mnn_pairs_many(small_q, small)
print(json.dumps([before, signatures()]))
"""


def test_warm_loads_every_kernel_a_verification_uses():
    """warm() (called by the node at startup) leaves no compilation for the first real call: in a
    fresh interpreter, real calls after it add no kernel specialisation."""
    out = subprocess.run([sys.executable, "-c", _WARM_CHECK], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert out.returncode == 0, out.stderr[-2000:]
    before, after = json.loads(out.stdout.strip().splitlines()[-1])
    assert before["scan_block"] == 2 and all(before.values())  # int16 (bf16 keys) and float32
    assert after == before
