"""Exact mutual nearest neighbours of one query map against K candidate maps, blocked and batched.

Same answer as ``verification.mnn_pairs`` (the plain full-matrix fp32 reference: S = f0 f1^T, argmax
both ways, first index on ties) without ever holding a whole similarity matrix: the K candidate maps
are stacked into one (K*N1, c) matrix and S is produced one block of query rows at a time (a few MB).

**Screen, then settle.** A block of S is computed by a fast GEMM (the *screen*, fp32 or bf16). Its
values differ from the reference's fp32 values by at most ``e`` (below), so an entry more than 2e
below its row's screen maximum can be neither the reference's argmax nor tied with it. One compare
pass per block lists, per row, the entries within 2e of the row maximum; a row with one entry is
decided, a row with several (*ambiguous*) is settled among them. Columns are settled only where it
matters: for each row's argmax j that is within 2e of column j's screen maximum, the groups of 32
query rows whose column maximum is within 2e are recomputed in fp32 and, where more than one row
lies within the fp32 bound, settled. So the screen precision changes speed, never the counts.

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

**Bounds** (x, y: fp32 vectors; u_b = 2^-8 the bf16 unit roundoff (8 significant bits);
g_c = c 2^-24 / (1 - c 2^-24) for an fp32 sum of c terms in any order):

- fp32 reference R and fp32 screen: |fl32(x.y) - x.y| <= g_c |x||y| each, so e = 2 g_c |x||y|.
- bf16 screen (inputs rounded to bf16, products exact in fp32, fp32 accumulation, output rounded to
  bf16): with dx = bf16(x) - x (computed exactly per vector, |dx| <= u_b |x|),
  |bf16(x).bf16(y) - x.y| <= |dx||y| + |x||dy| + |dx||dy|  (Cauchy-Schwarz),
  plus g_c |x~||y~| for the accumulation and u_b |x~||y~| (1 + g_c) for the output rounding, plus
  g_c |x||y| for the reference itself. For L2-normalised vectors this is at most
  3 u_b + u_b^2 + 2 g_c ~= 0.0118 (c = 128). Two refinements, both still rigorous: |dx| is the
  measured largest rounding error over the maps (~0.56 u_b for 128-d unit vectors), and a bf16
  output below 1 in magnitude rounds by at most 2^-9 (half its ulp), which holds for every entry
  compared with a row or column maximum v >= 0 when v + e + 2^-8 < 1. For SelaVPR-sized unit maps
  that gives e ~= 0.0065 (2e ~= 0.013). The screen margin is 2e. The bound uses the largest norms of each side,
  so it also holds for maps that are not exactly normalised.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np
import numpy.typing as npt

from vpr_ros.core.errors import InputError

__all__ = ["BlockGemm", "GemmFactory", "NumpyFp32Gemm", "mnn_pairs_many", "mnn_counts_many", "error_bound"]

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]



class BlockGemm(Protocol):
    """The screen GEMM of one query against stacked candidates: blocks of S = f0 F^T.

    ``precision`` is "fp32" (blocks are float32) or "bf16" (bf16 inputs, fp32 accumulation, bf16
    output, returned as the raw bit patterns in an int16 array). The core ships numpy's fp32; torch
    screens live in ``vpr_ros.models.backends.mnn_screen`` (the core does not import torch).
    """

    precision: str

    def block(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """S[r0:r1, c0:c1], C-contiguous."""
        ...


#: Builds the screen for (f0 (N0, c), F (K*N1, c)) float32 arrays.
GemmFactory = Callable[[np.ndarray, np.ndarray], BlockGemm]


class NumpyFp32Gemm:
    """fp32 screen through numpy's BLAS (OpenBLAS in the numpy wheels)."""

    precision = "fp32"

    def __init__(self, f0: F32, f: F32) -> None:
        self.a, self.b = f0, f

    def block(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        return self.a[r0:r1] @ self.b[c0:c1].T
_U_BF16 = 2.0 ** -8
_BLOCK_BYTES = 2 << 20  # one screen block stays in a 2 MB L2: the row and column passes reread it
_GROUP = 32  # query rows per column maximum kept: a column check recomputes only groups this small


def _gamma(c: int) -> float:
    return c * 2.0 ** -24 / (1.0 - c * 2.0 ** -24)


def _bf16(x: F32) -> F32:
    """Round-to-nearest-even to bf16, returned as fp32 (what torch's ``.bfloat16()`` does; finite x)."""
    bits = np.ascontiguousarray(x, np.float32).view(np.uint32)
    rounded = (bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) & np.uint32(0xFFFF0000)
    return rounded.view(np.float32)


_CHUNK = 8192  # rows per step of the O(N) passes, so their temporaries stay in cache


def _max_norm(x: F32, of_bf16_error: bool = False) -> float:
    """Largest row norm of x (or of bf16(x) - x), rounded up: the fp32 sum of squares errs by
    < c 2^-24 relative."""
    best = 0.0
    for s in range(0, len(x), _CHUNK):
        part = x[s:s + _CHUNK]
        if of_bf16_error:
            part = _bf16(part) - part
        best = max(best, float(np.max(np.einsum("ij,ij->i", part, part), initial=0.0)))
    return float(np.sqrt(best)) * (1.0 + 1e-4)


def _bounds(f0: F32, f1: F32, precision: str) -> tuple[float, float, float]:
    """(screen e without its output rounding, output rounding bound for |S| >= 1, fp32 e); see the
    module doc. bf16(x) - x is exact in fp32 (Sterbenz: the two are within a factor 2)."""
    g = _gamma(f0.shape[1])
    n0, n1 = _max_norm(f0), _max_norm(f1)
    e32 = 2.0 * g * n0 * n1 * (1.0 + 1e-6)
    if precision != "bf16":
        return e32, 0.0, e32
    d0, d1 = _max_norm(f0, of_bf16_error=True), _max_norm(f1, of_bf16_error=True)
    tilde = (n0 + d0) * (n1 + d1)
    base = d0 * n1 + n0 * d1 + d0 * d1 + g * tilde + g * n0 * n1
    return base * (1.0 + 1e-6), _U_BF16 * tilde * (1.0 + g) * (1.0 + 1e-6), e32


def error_bound(f0: F32, f1: F32, precision: str) -> float:
    """Largest |screen - reference| over all pairs of rows of f0 (N0, c) and f1 (N1, c); see module doc."""
    base, out, _ = _bounds(f0, f1, precision)
    return base + out


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


class _Screen:
    """A screen GEMM plus what its precision implies: bounds, thresholds and how to read blocks.

    bf16 blocks are raw bit patterns (int16): for values >= 0 the integer order is the float order
    and every negative value sorts below every positive one, so maxima are right whenever the true
    maximum is >= 0; thresholds <= 0 therefore mean "take everything" (see ``key``).
    """

    def __init__(self, f0: F32, f: F32, gemm: GemmFactory) -> None:
        self.gemm = gemm(f0, f)
        self.precision = self.gemm.precision
        if self.precision not in ("fp32", "bf16"):
            raise InputError(f"screen precision {self.precision!r} is unknown; a BlockGemm is fp32 or bf16")
        self.base, self.out, self.e32 = _bounds(f0, f, self.precision)
        self.floor = np.int16(-32768) if self.precision == "bf16" else np.float32(-np.inf)

    def block(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        return self.gemm.block(r0, r1, c0, c1)

    def margin(self, v: F32) -> F32:
        """2e for entries compared with a screen maximum v >= 0. A bf16 output below 1 in magnitude
        rounds by at most 2^-9 (half its ulp), so rows whose maximum is clear of 1 get that."""
        if self.precision != "bf16":
            return np.float32(2.0 * self.base)
        out = np.where(v + self.base + 2.0 ** -8 < 1.0, 2.0 ** -9, self.out)
        return (2.0 * (self.base + out)).astype(np.float32)

    def values(self, keys: np.ndarray) -> F32:
        if self.precision != "bf16":
            return keys.astype(np.float32, copy=False)
        return (keys.astype(np.int32) << 16).view(np.float32)

    def key(self, thr: F32) -> np.ndarray:
        """Smallest key whose value is >= thr (per element); the floor key where thr <= 0 (bf16)."""
        if self.precision != "bf16":
            return thr.astype(np.float32)
        bits = np.maximum(thr, 0).astype(np.float32).view(np.int32).astype(np.int64)
        k = (bits + 0xFFFF) >> 16
        return np.where(thr > 0, k, -32768).astype(np.int16)


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


def _tiles(n0: int, k: int, n1: int, itemsize: int, block_bytes: int) -> tuple[int, int]:
    """(query rows, candidates) per screen block so that one block is about ``block_bytes``."""
    rows = min(n0, 512, max(_GROUP, block_bytes // (itemsize * n1)))
    rows = max(_GROUP, rows // _GROUP * _GROUP)
    return rows, int(max(1, min(k, block_bytes // (itemsize * n1 * rows))))


def _rows_pass(scr: _Screen, n0: int, k: int, n1: int, block_bytes: int):
    """One pass over S in blocks: every row's screen argmax and its value, the column maxima per group
    of _GROUP query rows, and the competitors of ambiguous rows as (k, i, j, screen value) arrays."""
    itemsize = 2 if scr.precision == "bf16" else 4
    rows, kc = _tiles(n0, k, n1, itemsize, block_bytes)
    nb = -(-n0 // rows)
    rarg = np.empty((k, n0), np.int64)
    rval = np.empty((k, n0), np.float32)
    cmax = np.empty((-(-n0 // _GROUP), k, n1), np.int16 if itemsize == 2 else np.float32)
    amb: list[tuple[I64, I64, I64, F32]] = []
    # Candidate-major tile order: one candidate map stays in cache while the query rows stream by.
    for k0 in range(0, k, kc):
        k1 = min(k, k0 + kc)
        for b in range(nb):
            r0, r1 = b * rows, min(n0, (b + 1) * rows)
            s3 = scr.block(r0, r1, k0 * n1, k1 * n1).reshape(r1 - r0, k1 - k0, n1)
            full = (r1 - r0) // _GROUP * _GROUP  # whole groups in one reduction, then the rest
            g0 = r0 // _GROUP
            np.max(s3[:full].reshape(-1, _GROUP, k1 - k0, n1), axis=1, out=cmax[g0:g0 + full // _GROUP, k0:k1])
            if full < r1 - r0:
                np.max(s3[full:], axis=0, out=cmax[g0 + full // _GROUP, k0:k1])
            s = s3.reshape(-1, n1)  # row (i - r0) * (k1 - k0) + (kk - k0)
            topv = scr.values(s.max(axis=1))
            # Entries within 2e of their row's maximum: one per row, more where the row is ambiguous.
            hit = np.flatnonzero(s >= scr.key(topv - scr.margin(topv))[:, None])
            row, j = np.divmod(hit, n1)
            kk, ii = row % (k1 - k0) + k0, row // (k1 - k0) + r0
            many = np.bincount(row, minlength=len(s))[row] > 1
            vals = scr.values(s.ravel()[hit])
            rarg[kk, ii] = j  # rows with several competitors are overwritten by the settle
            rval[kk, ii] = vals
            if many.any():
                amb.append((kk[many], ii[many], j[many], vals[many]))
    return rarg, rval, cmax, amb


def _mnn_group(f0: F32, f: F32, gemm: GemmFactory, block_bytes: int) -> list[tuple[I64, I64]]:
    """MNN pairs of f0 (N0, c) against each of f (K, N1, c)."""
    k, n1, _ = f.shape
    n0 = f0.shape[0]
    flat = f.reshape(k * n1, -1)
    scr = _Screen(f0, flat, gemm)
    e32 = scr.e32
    rarg, rval, cmax, amb = _rows_pass(scr, n0, k, n1, block_bytes)
    if amb:  # settle ambiguous rows among their competitors
        ks, is_, js, vs = (np.concatenate(a) for a in zip(*amb))
        win = _settle(f0, flat, ks * n0 + is_, is_, ks * n1 + js, js, e32)
        rarg[ks[win], is_[win]] = js[win]
        rval[ks[win], is_[win]] = vs[win]

    # A row's best j can only be mutual when S[i, j] is within 2e of column j's screen maximum.
    mkey = cmax.max(axis=0)
    mval = scr.values(mkey)
    kidx = np.arange(k)[:, None]
    mj = mval[kidx, rarg]
    ck, ci = np.nonzero(rval >= mj - scr.margin(mj))
    cj = rarg[ck, ci]
    col = ck * n1 + cj
    ucol, inv = np.unique(col, return_inverse=True)
    if not len(ucol):
        return [(ci, cj)] * k
    uk, uj = ucol // n1, ucol % n1
    mu = mval[uk, uj]
    near = cmax[:, uk, uj] >= scr.key(mu - scr.margin(mu))[None]  # (row groups, U)
    # Recompute the near row groups of those columns in fp32, then settle rows within the fp32 bound.
    best = np.full(len(ucol), -np.inf, np.float32)
    parts = []
    for b in np.nonzero(near.any(axis=1))[0]:
        us = np.nonzero(near[b])[0]
        r0 = b * _GROUP
        v = f0[r0:r0 + _GROUP] @ flat[ucol[us]].T  # (G, n)
        best[us] = np.maximum(best[us], v.max(axis=0))
        parts.append((r0, us, v))
    cr, cu = [], []
    for r0, us, v in parts:
        p, q = np.nonzero(v >= best[us] - 2.0 * e32)
        cr.append(p + r0)
        cu.append(us[q])
    crows, cuid = np.concatenate(cr).astype(np.int64), np.concatenate(cu).astype(np.int64)
    colarg = np.full(len(ucol), -1, np.int64)
    win = _exact_winners(f0, flat, cuid, crows, ucol[cuid], crows, np.arange(len(cuid)))
    colarg[cuid[win]] = crows[win]
    mutual = colarg[inv] == ci
    mk, mi, mj = ck[mutual], ci[mutual], cj[mutual]  # sorted by candidate, then query index
    cut = np.searchsorted(mk, np.arange(k + 1))
    return [(mi[cut[kk]:cut[kk + 1]], mj[cut[kk]:cut[kk + 1]]) for kk in range(k)]


def _plain(f0: F32, f1: F32) -> tuple[I64, I64]:
    """The reference itself (one full fp32 product, argmax both ways), for maps whose whole S is
    no bigger than a block: there it is the fastest exact path (lite0-gem's 400x400: 0.4 ms)."""
    sim = f0 @ f1.T
    best1, best0 = np.argmax(sim, axis=1), np.argmax(sim, axis=0)
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
    the screen; it changes speed, not results. Without one, candidates whose whole S fits in
    ``block_bytes`` take the plain full product and larger ones numpy's fp32 screen. Memory is O(block_bytes)
    besides the inputs and a (blocks, K, N1) table of column maxima.
    """
    f0 = _flat(local0, "query")
    flats = [_flat(x, "candidate") for x in locals1]
    out: list[tuple[I64, I64] | None] = [None] * len(flats)
    shapes: dict[tuple[int, int], list[int]] = {}
    for pos, f in enumerate(flats):
        if f.shape[1] != f0.shape[1]:
            raise InputError(f"local feature channels differ: {f0.shape[1]} vs {f.shape[1]}")
        shapes.setdefault(f.shape, []).append(pos)
    for group in shapes.values():  # candidates of one shape share one stacked matrix
        n1 = flats[group[0]].shape[0]
        if f0.shape[0] == 0 or n1 == 0:
            res = [(np.zeros(0, np.int64), np.zeros(0, np.int64))] * len(group)
        elif gemm is None and 4 * f0.shape[0] * n1 <= block_bytes:
            res = [_plain(f0, flats[p]) for p in group]
        else:
            res = _mnn_group(f0, np.stack([flats[p] for p in group]), gemm or NumpyFp32Gemm,
                             block_bytes)
        for pos, r in zip(group, res):
            out[pos] = r
    return out  # type: ignore[return-value]


def mnn_counts_many(local0: npt.ArrayLike, locals1: list[npt.ArrayLike], gemm: GemmFactory | None = None,
                    block_bytes: int = _BLOCK_BYTES) -> list[int]:
    """SelaVPR's score per candidate: the MNN count, with its quirk that a single pair scores 0."""
    counts = [len(i0) for i0, _ in mnn_pairs_many(local0, locals1, gemm, block_bytes)]
    return [0 if n == 1 else n for n in counts]
