"""The row pass of ``mnn_batched``: one sweep over S in blocks that finds every row's screen argmax
and every *competitor* (an entry within 2e of its row's maximum, so possibly the reference's argmax).

With numba the sweep is ``mnn_kernels.scan_block`` (a row at a time, hits read only from chunks
whose maximum reaches the threshold). Without it, numpy: scanning every entry of a block against
its row's threshold would cost most besides the GEMM. The similarity of local feature maps is
smooth across a candidate's grid, so a row's competitors nearly always sit next to its peak. The
numpy pass therefore *peels*: it reads and masks the 8 grid neighbours of the argmax, takes the
maximum of what is left, and only rows whose remaining maximum still reaches the threshold go on
(with that entry as the next peak). After ``PEELS`` peaks the few rows left are scanned whole.
Either way every entry at or above the threshold is found; smooth data is only faster.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from vpr_ros.core.matching import mnn_kernels
from vpr_ros.core.matching.mnn_bounds import Screen

__all__ = ["GROUP", "PEELS", "neighbour_offsets", "rows_pass"]

I64 = npt.NDArray[np.int64]

GROUP = 32  # query rows per column maximum kept: a column check recomputes only groups this small
PEELS = 2  # peaks peeled per row before a whole-row scan
_TOP_KEY = {2: np.int16(32767), 4: np.float32(np.inf)}  # a threshold no entry reaches (finite inputs)


def neighbour_offsets(width: int, n1: int) -> I64:
    """Offsets (mod n1) of a location's 8 grid neighbours in a candidate map ``width`` wide: distinct
    and non-zero mod n1 when the map has room (width >= 3, n1 >= 2 width + 3); else the next few
    locations."""
    w = width
    if w >= 3 and n1 >= 2 * w + 3:
        return np.array([-w - 1, -w, -w + 1, -1, 1, w - 1, w, w + 1], np.int64)
    return np.arange(1, min(9, n1), dtype=np.int64)


class _Hits:
    """Competitors found so far: block row, candidate location and screen key."""

    def __init__(self) -> None:
        self.r: list[I64] = []
        self.j: list[I64] = []
        self.key: list[np.ndarray] = []

    def add(self, r: I64, j: I64, key: np.ndarray) -> None:
        if len(r):
            self.r.append(r)
            self.j.append(j)
            self.key.append(key)


def _peel(scr: Screen, s: np.ndarray, thr: np.ndarray, arg: I64, offs: I64, hits: _Hits) -> None:
    """Records every entry of s (R, N1) other than its row's argmax ``arg`` that reaches ``thr``.
    Overwrites s."""
    n, n1 = s.shape
    rows, peak, sub = np.arange(n), arg, s
    for p in range(PEELS + 1):
        start = np.arange(len(sub)) * n1
        flat = sub.reshape(-1)
        nb = (peak[:, None] + offs) % n1
        nbf = nb + start[:, None]
        near = flat[nbf]
        flat[nbf] = scr.floor
        flat[start + peak] = scr.floor
        q = np.flatnonzero(near >= thr[:, None])
        if len(q):
            r, o = np.divmod(q, len(offs))
            hits.add(rows[r], nb[r, o], near[r, o])
        if p == PEELS:  # the rows that still have competitors: scan them whole
            q = np.flatnonzero(sub >= thr[:, None])
            r, j = np.divmod(q, n1)
            hits.add(rows[r], j, flat[q])
            return
        peak = sub.argmax(axis=1)
        top = flat[start + peak]
        far = np.flatnonzero(top >= thr)  # rows with a competitor beyond what is masked
        if not len(far):
            return
        rows, peak, thr, sub = rows[far], peak[far], thr[far], sub[far]
        hits.add(rows, peak, top[far])


def _block_rows(scr: Screen, s: np.ndarray, offs: I64, hits: _Hits) -> tuple[I64, np.ndarray]:
    """(argmax, its key) per row of the block s (R, N1); competitors go to ``hits``. Overwrites s."""
    n, n1 = s.shape
    arg = s.argmax(axis=1)
    top = s.reshape(-1)[np.arange(n) * n1 + arg]
    thr = scr.thresholds(top)
    low = np.flatnonzero(thr == scr.floor)
    if len(low):  # maxima too small for the bound to exclude anything (bf16): all of the row competes
        r, j = np.divmod(np.flatnonzero(np.ones((len(low), n1), bool)), n1)
        keep = j != arg[low[r]]
        hits.add(low[r[keep]], j[keep], s[low[r[keep]], j[keep]])
        thr = thr.copy()
        thr[low] = _TOP_KEY[scr.itemsize]
    _peel(scr, s, thr, arg, offs, hits)
    return arg, top


def _tiles(n0: int, k: int, n1: int, itemsize: int, block_bytes: int) -> tuple[int, int]:
    """(query rows, candidates) per screen block so that one block is about ``block_bytes``; one
    candidate per block where the compiled kernels run."""
    rows = min(n0, 4096, max(GROUP, block_bytes // (itemsize * n1)))
    rows = max(GROUP, rows // GROUP * GROUP)
    if mnn_kernels.AVAILABLE:
        return rows, 1
    return rows, int(max(1, min(k, block_bytes // (itemsize * n1 * rows))))


class _KernelRows:
    """The compiled row pass of one block (``mnn_kernels.scan_block``), buffers reused across blocks."""

    def __init__(self, scr: Screen, rows: int, dtype: type) -> None:
        self.table = scr.table if scr.table is not None else np.zeros(0, np.int16)
        self.margin = 2.0 * scr.base  # the fp32 screen's 2e (bf16 thresholds come from the table)
        self.rowmax = np.empty(rows, dtype)
        self.arg = np.empty(rows, np.int64)
        self._grow(rows * 8, dtype)

    def _grow(self, n: int, dtype: type) -> None:
        self.out_r, self.out_j, self.out_k = np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, dtype)

    def __call__(self, s: np.ndarray, cmax: np.ndarray, g0: int):
        rowmax, arg = self.rowmax[:len(s)], self.arg[:len(s)]
        found = mnn_kernels.scan_block(s, cmax, g0, GROUP, self.table, self.margin, rowmax, arg,
                                       self.out_r, self.out_j, self.out_k)
        if found > len(self.out_r):
            self._grow(found, s.dtype)
            mnn_kernels.scan_block(s, cmax, g0, GROUP, self.table, self.margin, rowmax, arg,
                                   self.out_r, self.out_j, self.out_k)
        return arg.copy(), rowmax.copy(), self.out_r[:found].copy(), self.out_j[:found].copy(), \
            self.out_k[:found].copy()


def rows_pass(scr: Screen, n0: int, k: int, n1: int, width: int, block_bytes: int):
    """One pass over S (N0 x K*N1) in blocks, compiled (``mnn_kernels``) or in numpy.

    Returns (rarg (K, N0) screen argmax, rkey (K, N0) its key, cmax (K, N0/GROUP, N1) column maxima
    per group of GROUP query rows, competitors (k, i, j, key) of every ambiguous row, its argmax
    included; empty arrays where no row is ambiguous).
    """
    rows, kc = _tiles(n0, k, n1, scr.itemsize, block_bytes)
    dtype = np.int16 if scr.itemsize == 2 else np.float32
    rarg = np.empty((k, n0), np.int64)
    rkey = np.empty((k, n0), dtype)
    cmax = np.empty((k, -(-n0 // GROUP), n1), dtype)
    if mnn_kernels.AVAILABLE:
        found = _rows_compiled(scr, rows, rarg, rkey, cmax)
    else:
        found = _rows_numpy(scr, rows, kc, width, rarg, rkey, cmax)
    return _result(rarg, rkey, cmax, found, with_argmax=not mnn_kernels.AVAILABLE)


def _rows_compiled(scr: Screen, rows: int, rarg: I64, rkey: np.ndarray, cmax: np.ndarray):
    """The blocks of one candidate at a time through ``scan_block``; fills rarg, rkey and cmax and
    returns the competitors (k, i, j, key) per block, each ambiguous row's argmax included."""
    k, n0 = rarg.shape
    n1 = cmax.shape[2]
    kernel = _KernelRows(scr, rows, rkey.dtype)
    found = []
    for kk in range(k):
        for r0 in range(0, n0, rows):
            r1 = min(n0, r0 + rows)
            arg, top, r, j, key = kernel(scr.block(r0, r1, kk * n1, (kk + 1) * n1), cmax[kk], r0 // GROUP)
            rarg[kk, r0:r1], rkey[kk, r0:r1] = arg, top
            if len(r):
                found.append((np.full(len(r), kk), r + r0, j, key))
    return found


def _rows_numpy(scr: Screen, rows: int, kc: int, width: int, rarg: I64, rkey: np.ndarray, cmax: np.ndarray):
    """The numpy row pass (peeling grid neighbours, ``_peel``), ``kc`` candidates per block; fills
    rarg, rkey and cmax and returns the competitors (k, i, j, key) besides each row's argmax."""
    k, n0 = rarg.shape
    n1 = cmax.shape[2]
    offs = neighbour_offsets(width, n1)
    found = []
    # Candidate-major tile order: one candidate map stays in cache while the query rows stream by.
    for k0 in range(0, k, kc):
        k1 = min(k, k0 + kc)
        for r0 in range(0, n0, rows):
            r1 = min(n0, r0 + rows)
            s3 = scr.block(r0, r1, k0 * n1, k1 * n1).reshape(r1 - r0, k1 - k0, n1)
            full = (r1 - r0) // GROUP * GROUP  # whole groups in one reduction, then the rest
            g0 = r0 // GROUP
            np.max(s3[:full].reshape(-1, GROUP, k1 - k0, n1), axis=1,
                   out=cmax[k0:k1, g0:g0 + full // GROUP].transpose(1, 0, 2))
            if full < r1 - r0:
                np.max(s3[full:], axis=0, out=cmax[k0:k1, g0 + full // GROUP])
            hits = _Hits()
            arg, top = _block_rows(scr, s3.reshape(-1, n1), offs, hits)  # row (i - r0) * (k1 - k0) + kk - k0
            rarg[k0:k1, r0:r1] = arg.reshape(r1 - r0, k1 - k0).T
            rkey[k0:k1, r0:r1] = top.reshape(r1 - r0, k1 - k0).T
            if hits.r:
                r = np.concatenate(hits.r)
                found.append((r % (k1 - k0) + k0, r // (k1 - k0) + r0, np.concatenate(hits.j),
                              np.concatenate(hits.key)))
    return found


def _result(rarg, rkey, cmax, found, with_argmax: bool):
    """rows_pass's return value; ``with_argmax`` adds each ambiguous row's own argmax to its
    competitors (the numpy pass lists only the others)."""
    if not found:
        empty = np.zeros(0, np.int64)
        return rarg, rkey, cmax, (empty, empty, empty, rkey.reshape(-1)[:0])
    ks, is_, js, keys = (np.concatenate(a) for a in zip(*found))
    if not with_argmax:
        return rarg, rkey, cmax, (ks, is_, js, keys)
    n0 = rarg.shape[1]
    amb = np.unique(ks * n0 + is_)
    ak, ai = np.divmod(amb, n0)
    return rarg, rkey, cmax, (np.concatenate([ks, ak]), np.concatenate([is_, ai]),
                              np.concatenate([js, rarg[ak, ai]]), np.concatenate([keys, rkey[ak, ai]]))
