"""Exact mutual nearest neighbours of one query map against K candidate maps, blocked and batched.

Same answer as ``verification.mnn_pairs`` (the plain full-matrix fp32 reference: S = f0 f1^T, argmax
both ways, first index on ties) without ever holding a whole similarity matrix: the K candidate maps
are stacked into one (K*N1, c) matrix and S is produced one block of query rows at a time (a few MB).

**Screen, then settle.** A block of S is computed by a fast GEMM (the *screen*, fp32 or bf16). Its
values differ from the reference's fp32 values by at most ``e`` (``mnn_bounds``), so an entry
more than 2e below its row's screen maximum can be neither the reference's argmax nor tied with it.
The row pass (``mnn_rows``) lists, per row, every entry within 2e of the row maximum; a row with one
entry is decided, a row with several (*ambiguous*) is settled among them. Columns are settled only
where it matters: for each row's argmax j that is within 2e of column j's screen maximum, the groups
of 32 query rows whose column maximum is within 2e are recomputed in fp32 and, where more than one
row lies within the fp32 bound, settled. So the screen precision changes speed, never the counts.

**Settling** first takes fp32 dot products (any order: within 2 g_c of the reference); only where
two competitors are within that bound, it computes them in float64 with a fixed sequential order
(the products of fp32 numbers are exact in float64; the sum errs by < c 2^-53) rounded to fp32;
the winner is the largest, the first index on ties, as ``np.argmax``/``torch.argmax`` do. Equal
vectors therefore tie exactly, as in the reference. Where two candidates differ by less than the
reference GEMM's own rounding (~1e-7, e.g. vectors one ulp apart), the reference's choice is an
artefact of its BLAS: numpy's sgemm values equal the correctly rounded product in only 15-20 % of
entries here, and change with the block shape and OPENBLAS_NUM_THREADS. There we take the correctly
rounded fp32 values (ties to the first index), deterministic on every machine; such cases are
always settled, never guessed from the screen.

The bounds, the screens and their thresholds are in ``mnn_bounds``; the row pass in ``mnn_rows``.
With numba installed (``mnn_kernels``) the row pass, the fp32 settles of rows and columns, the
norms of the bound and the plain product's column argmax are compiled loops; without it numpy runs
them. Both give the same pairs (the tests run each).
"""

from __future__ import annotations

import time

import numpy as np
import numpy.typing as npt

from vpr_ros.core.matching import mnn_kernels
from vpr_ros.core.errors import InputError
from vpr_ros.core.matching.mnn_bounds import BlockGemm, GemmFactory, NumpyFp32Gemm, Screen, error_bound
from vpr_ros.core.matching.mnn_rows import GROUP, rows_pass

__all__ = ["BlockGemm", "GemmFactory", "NumpyFp32Gemm", "mnn_pairs_many", "mnn_counts_many", "error_bound", "warm"]

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]

_BLOCK_BYTES = 2 << 20  # one screen block is about this big (the row pass reads it a few times)
_CHUNK = 8192  # pairs per step of the settle


def _exact(f0: F32, f1: F32, rows: I64, cols: I64) -> F32:
    """f0[rows] . f1[cols] per pair: float64, one fixed sequential order, rounded to fp32.

    The order is the same for every pair (an outer-axis reduction), so equal vectors give equal values.
    """
    out = np.empty(len(rows), np.float32)
    for s in range(0, len(rows), 4096):
        x = np.ascontiguousarray(f0[rows[s:s + 4096]].T, dtype=np.float64)  # (c, p)
        y = np.ascontiguousarray(f1[cols[s:s + 4096]].T, dtype=np.float64)
        out[s:s + 4096] = np.add.reduce(x * y, axis=0)
    return out


def _first_max(groups: I64, idx: I64, vals: F32) -> I64:
    """Positions of the winners: per group the largest value, the smallest idx on ties."""
    order = np.lexsort((idx, -vals, groups))
    g = groups[order]
    first = np.ones(len(g), bool)
    first[1:] = g[1:] != g[:-1]
    return order[first]


def _settle(f0: F32, f1: F32, groups: I64, rows: I64, cols: I64, idx: I64, e32: float) -> I64:
    """Positions of the winners per group among pairs (rows, cols): an fp32 dot first (|v - R| <=
    e32), the exact values only for those within 2 e32 of their group's best."""
    if mnn_kernels.AVAILABLE:
        return _settle_compiled(f0, f1, groups, rows, cols, idx, e32)
    v = np.empty(len(rows), np.float32)
    for s in range(0, len(rows), _CHUNK):
        v[s:s + _CHUNK] = np.einsum("pc,pc->p", f0[rows[s:s + _CHUNK]], f1[cols[s:s + _CHUNK]])
    order = np.argsort(groups, kind="stable")
    g = groups[order]
    new = np.ones(len(g), bool)
    new[1:] = g[1:] != g[:-1]
    vmax = np.maximum.reduceat(v[order], np.flatnonzero(new))
    sel = order[v[order] >= vmax[np.cumsum(new) - 1] - 2.0 * e32]
    return _exact_winners(f0, f1, groups, rows, cols, idx, sel)


def _settle_compiled(f0: F32, f1: F32, groups: I64, rows: I64, cols: I64, idx: I64, e32: float) -> I64:
    """``_settle`` through ``mnn_kernels.settle_groups`` (the row pass lists groups contiguously)."""
    order = None if np.all(groups[1:] >= groups[:-1]) else np.argsort(groups, kind="stable")
    g, r, c = (groups, rows, cols) if order is None else (groups[order], rows[order], cols[order])
    starts = np.flatnonzero(np.concatenate([[True], g[1:] != g[:-1], [True]]))
    win = np.empty(len(starts) - 1, np.int64)
    tied = np.zeros(len(g), bool)
    mnn_kernels.settle_groups(f0, f1, r, c, starts, 2.0 * e32, win, tied)
    pos, tied_pos = win[win >= 0], np.flatnonzero(tied)
    if order is not None:
        pos, tied_pos = order[pos], order[tied_pos]
    if not len(tied_pos):
        return pos
    return np.concatenate([pos, _exact_winners(f0, f1, groups, rows, cols, idx, tied_pos)])


def _exact_winners(f0: F32, f1: F32, groups: I64, rows: I64, cols: I64, idx: I64, sel: I64) -> I64:
    """Winners among the positions ``sel``: a lone survivor of its group wins as it is; groups with
    several are decided by the exact values."""
    inv = np.unique(groups[sel], return_inverse=True)[1]
    lone = np.bincount(inv)[inv] == 1
    tied = sel[~lone]
    if not len(tied):
        return sel
    won = tied[_first_max(groups[tied], idx[tied], _exact(f0, f1, rows[tied], cols[tied]))]
    return np.concatenate([sel[lone], won])


def _mnn_group(f0: F32, f: F32, width: int, gemm: GemmFactory, block_bytes: int) -> list[tuple[I64, I64]]:
    """MNN pairs of f0 (N0, c) against each of f (K, N1, c), candidate maps ``width`` locations wide."""
    k, n1, _ = f.shape
    n0 = f0.shape[0]
    flat = f.reshape(k * n1, -1)
    scr = Screen(f0, flat, gemm)
    e32 = scr.e32
    rarg, rkey, cmax, (ks, is_, js, keys) = rows_pass(scr, n0, k, n1, width, block_bytes)
    if len(ks):  # settle ambiguous rows among their competitors
        win = _settle(f0, flat, ks * n0 + is_, is_, ks * n1 + js, js, e32)
        rarg[ks[win], is_[win]] = js[win]
        rkey[ks[win], is_[win]] = keys[win]

    # A row's best j can only be mutual when S[i, j] is within 2e of column j's screen maximum.
    cthr = scr.thresholds(cmax.max(axis=1))  # (K, N1)
    ck, ci = np.divmod(np.flatnonzero(rkey >= cthr[np.arange(k)[:, None], rarg]), n0)
    cj = rarg[ck, ci]
    col = ck * n1 + cj
    ucol, inv = np.unique(col, return_inverse=True)
    if not len(ucol):
        return [(ci, cj)] * k
    uk, uj = ucol // n1, ucol % n1
    if mnn_kernels.AVAILABLE:
        colarg = _columns_compiled(f0, flat, cmax, uk, uj, ucol, cthr[uk, uj], e32)
    else:
        colarg = _columns(f0, flat, cmax, uk, uj, ucol, cthr[uk, uj], e32)
    mutual = colarg[inv] == ci
    mk, mi, mj = ck[mutual], ci[mutual], cj[mutual]  # sorted by candidate, then query index
    cut = np.searchsorted(mk, np.arange(k + 1))
    return [(mi[cut[kk]:cut[kk + 1]], mj[cut[kk]:cut[kk + 1]]) for kk in range(k)]


def _columns(f0: F32, flat: F32, cmax: np.ndarray, uk: I64, uj: I64, ucol: I64, thr: np.ndarray,
             e32: float) -> I64:
    """Column argmax (the query row) of each column ucol among the row groups whose screen maximum
    reaches thr: the near groups recomputed in fp32, rows within the fp32 bound settled exactly."""
    near = cmax[uk, :, uj].T >= thr[None]  # (row groups, U)
    # Recompute the near row groups of those columns in fp32, then settle rows within the fp32 bound.
    best = np.full(len(ucol), -np.inf, np.float32)
    parts = []
    for b in np.nonzero(near.any(axis=1))[0]:
        us = np.nonzero(near[b])[0]
        r0 = b * GROUP
        v = f0[r0:r0 + GROUP] @ flat[ucol[us]].T  # (G, n)
        best[us] = np.maximum(best[us], v.max(axis=0))
        parts.append((r0, us, v))
    cr, cu = [], []
    for r0, us, v in parts:
        p, q = np.divmod(np.flatnonzero(v >= best[us] - 2.0 * e32), len(us))
        cr.append(p + r0)
        cu.append(us[q])
    crows, cuid = np.concatenate(cr).astype(np.int64), np.concatenate(cu).astype(np.int64)
    colarg = np.full(len(ucol), -1, np.int64)
    win = _exact_winners(f0, flat, cuid, crows, ucol[cuid], crows, np.arange(len(cuid)))
    colarg[cuid[win]] = crows[win]
    return colarg


def _columns_compiled(f0: F32, flat: F32, cmax: np.ndarray, uk: I64, uj: I64, ucol: I64, thr: np.ndarray,
                      e32: float) -> I64:
    """``_columns`` through ``mnn_kernels.settle_columns``."""
    colarg = np.empty(len(ucol), np.int64)
    tie_u, tie_r = np.empty(len(ucol), np.int64), np.empty(len(ucol), np.int64)
    n = mnn_kernels.settle_columns(f0, flat, cmax, uk, uj, ucol, thr, GROUP, 2.0 * e32, colarg, tie_u, tie_r)
    if n > len(tie_u):
        tie_u, tie_r = np.empty(n, np.int64), np.empty(n, np.int64)
        mnn_kernels.settle_columns(f0, flat, cmax, uk, uj, ucol, thr, GROUP, 2.0 * e32, colarg, tie_u, tie_r)
    tie_u, tie_r = tie_u[:n], tie_r[:n]
    if n:
        win = _exact_winners(f0, flat, tie_u, tie_r, ucol[tie_u], tie_r, np.arange(n))
        colarg[tie_u[win]] = tie_r[win]
    return colarg


def _plain(f0: F32, f1: F32) -> tuple[I64, I64]:
    """The reference itself (one full fp32 product, argmax both ways), for maps whose whole S is
    no bigger than a block: there it is the fastest exact path (lite0-gem's 400x400: 0.4 ms)."""
    sim = f0 @ f1.T
    best1 = np.argmax(sim, axis=1)
    if mnn_kernels.AVAILABLE:
        best0 = np.empty(len(f1), np.int64)
        mnn_kernels.column_argmax(sim, best0)
    else:
        best0 = np.argmax(sim, axis=0)
    idx0 = np.arange(len(f0))
    mutual = best0[best1] == idx0
    return idx0[mutual], best1[mutual]


def _flat(local: npt.ArrayLike, name: str) -> F32:
    arr = np.asarray(local)
    if arr.ndim != 3:
        raise InputError(f"{name} local features must be (h, w, c), got shape {arr.shape}")
    flat = np.ascontiguousarray(arr.reshape(-1, arr.shape[2]), dtype=np.float32)
    if not np.all(np.isfinite(flat)):
        raise InputError(f"{name} local features contain NaN or inf; check the model output")
    return flat


def mnn_pairs_many(local0: npt.ArrayLike, locals1: list[npt.ArrayLike], gemm: GemmFactory | None = None,
                   block_bytes: int = _BLOCK_BYTES) -> list[tuple[I64, I64]]:
    """MNN pairs of one (h, w, c) query map against each (h', w', c) candidate map.

    Returns, per candidate, flat location indices (M,) into the query and (M,) into the candidate,
    ordered by query index: exactly ``verification.mnn_pairs(local0, local1)``. ``gemm`` builds
    the screen; it changes speed, not results. Without one (or with one whose ``small_maps_plain``
    is true), candidates whose whole S fits in ``block_bytes`` take the plain full product; larger
    ones take the screen, numpy's fp32 by default. Memory is O(block_bytes)
    besides the inputs and a (blocks, K, N1) table of column maxima.
    """
    f0 = _flat(local0, "query")
    flats = [_flat(x, "candidate") for x in locals1]
    out: list[tuple[I64, I64] | None] = [None] * len(flats)
    shapes: dict[tuple[int, ...], list[int]] = {}
    for pos, (f, x) in enumerate(zip(flats, locals1)):
        if f.shape[1] != f0.shape[1]:
            raise InputError(f"local feature channels differ: {f0.shape[1]} vs {f.shape[1]}")
        shapes.setdefault(np.shape(x), []).append(pos)
    for shape, group in shapes.items():  # candidates of one shape share one stacked matrix
        n1 = flats[group[0]].shape[0]
        if f0.shape[0] == 0 or n1 == 0:
            res = [(np.zeros(0, np.int64), np.zeros(0, np.int64))] * len(group)
        elif (gemm is None or getattr(gemm, "small_maps_plain", False)) and 4 * f0.shape[0] * n1 <= block_bytes:
            res = [_plain(f0, flats[p]) for p in group]
        else:
            res = _mnn_group(f0, np.stack([flats[p] for p in group]), shape[1], gemm or NumpyFp32Gemm,
                             block_bytes)
        for pos, r in zip(group, res):
            out[pos] = r
    return out  # type: ignore[return-value]


def mnn_counts_many(local0: npt.ArrayLike, locals1: list[npt.ArrayLike], gemm: GemmFactory | None = None,
                    block_bytes: int = _BLOCK_BYTES) -> list[int]:
    """SelaVPR's score per candidate: the MNN count, with its quirk that a single pair scores 0."""
    counts = [len(i0) for i0, _ in mnn_pairs_many(local0, locals1, gemm, block_bytes)]
    return [0 if n == 1 else n for n in counts]


def warm(gemm: GemmFactory | None = None) -> float:
    """Loads (first time on a machine: compiles, ~2.5 s) the kernels the MNN count will use with
    ``gemm``, so the first verification of a node does not stall; returns the seconds it took.
    Runs every path once on tiny maps full of exact ties: the plain product, the screen (``gemm``,
    or numpy's fp32), the row and column settles."""
    start = time.perf_counter()
    sign = np.array([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [1.0, 1.0]], np.float32) / np.sqrt(2.0)
    q = np.tile(sign, (8, 1)).reshape(8, 4, 2)  # rows and columns repeat: every maximum is tied
    for screen in {gemm, NumpyFp32Gemm} - {None}:
        mnn_pairs_many(q, [q], screen, block_bytes=64)
    mnn_pairs_many(q, [q])
    return time.perf_counter() - start
