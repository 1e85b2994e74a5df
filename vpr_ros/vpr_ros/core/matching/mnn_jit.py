"""The numba kernels behind ``mnn_kernels`` (imported on first use; see that module). It imports
nothing of vpr_ros: ``mnn_kernels`` loads it lazily, so the two never import each other."""

from __future__ import annotations

import numpy as np
from numba import njit


__all__ = ["scan_block", "settle_groups", "max_norms", "column_argmax", "settle_columns"]

CHUNKS = 64  # strided chunks per row in scan_block


@njit(cache=True, nogil=True, boundscheck=False)
def scan_block(s, cmax, g0, group, table, margin, rowmax, arg, out_r, out_j, out_k):
    """One sweep over the screen block s (R, N1), a row at a time while it is in cache:

    - cmax[g0 + i // group]: the maximum of the group's rows (an elementwise max, vectorised);
    - the maxima of the row's 64 strided chunks (chunk c: s[i, c::64]; vertical maxima,
      vectorised) and rowmax[i], their maximum;
    - the row's threshold: table[key as uint16] for bf16 keys (``Screen``'s table), or
      rowmax - margin in float64 for fp32 (table empty); entries are compared in float64;
    - arg[i]: the first index of the maximum (numpy's argmax); and, for rows with more than
      one entry at or above the threshold, all of them in out_* (row, j, key), read only from
      the chunks whose maximum reaches it.

    Returns the number of such entries, which may exceed the buffers (then call again with
    larger ones: the sweep is idempotent)."""
    n_rows, n1 = s.shape
    full = n1 // CHUNKS
    acc = np.empty(CHUNKS, s.dtype)
    cap = len(out_r)
    keyed = len(table) > 0
    n = 0
    for i in range(n_rows):
        g = g0 + i // group
        if i % group == 0:
            for j in range(n1):
                cmax[g, j] = s[i, j]
        else:
            for j in range(n1):
                cmax[g, j] = max(cmax[g, j], s[i, j])
        for c in range(CHUNKS):
            acc[c] = s[i, c] if c < n1 else s[i, 0]
        for r in range(1, full):
            o = r * CHUNKS
            for c in range(CHUNKS):
                acc[c] = max(acc[c], s[i, o + c])
        o = max(full, 1) * CHUNKS
        for c in range(n1 - o):
            acc[c] = max(acc[c], s[i, o + c])
        top = acc[0]
        for c in range(CHUNKS):
            top = max(top, acc[c])
        rowmax[i] = top
        if keyed:
            t = np.float64(table[np.uint16(top)])
        else:
            t = np.float64(top) - margin
        start = n
        first = n1
        for c in range(CHUNKS):
            if np.float64(acc[c]) >= t:
                for j in range(c, n1, CHUNKS):
                    v = s[i, j]
                    if np.float64(v) >= t:
                        if v == top and j < first:
                            first = j
                        if n < cap:
                            out_r[n] = i
                            out_j[n] = j
                            out_k[n] = v
                        n += 1
        arg[i] = first
        if n - start == 1:
            n = start
    return n

@njit(cache=True, nogil=True, boundscheck=False, fastmath={"reassoc", "contract"})
def _dot(x, y):
    """fp32 dot product in any order (within the fp32 bound of the reference's)."""
    acc = np.float32(0.0)
    for q in range(len(x)):
        acc += x[q] * y[q]
    return acc


@njit(cache=True, nogil=True, boundscheck=False)
def _pick(v, start, end, margin, tied):
    """Among v[start:end], the entries within ``margin`` (2 e32) of the best: the position of a lone
    one, or -1 with tied[p] set for each of several (the exact values must decide)."""
    best = -np.inf
    for p in range(start, end):
        best = max(best, np.float64(v[p]))
    low = best - margin
    n = 0
    win = -1
    for p in range(start, end):
        if v[p] >= low:
            n += 1
            win = p
    if n < 2:
        return win
    for p in range(start, end):
        tied[p] = v[p] >= low
    return -1


@njit(cache=True, nogil=True, boundscheck=False)
def settle_groups(f0, f1, rows, cols, starts, margin, win, tied):
    """Competitor pairs (rows[p], cols[p]) in contiguous groups starts[g]:starts[g+1]: an fp32
    dot each, then per group ``_pick``: win[g] is the lone winner's position or -1, and tied[p]
    marks the pairs the exact float64 values must decide."""
    v = np.empty(len(rows), np.float32)
    for p in range(len(rows)):
        v[p] = _dot(f0[rows[p]], f1[cols[p]])
    for g in range(len(starts) - 1):
        win[g] = _pick(v, starts[g], starts[g + 1], margin, tied)


@njit(cache=True, nogil=True, boundscheck=False, fastmath={"reassoc", "contract"})
def max_norms(x):
    """(largest squared row norm of x, of bf16(x) - x), summed in float64 (bf16 rounding to
    nearest even, as torch does)."""
    n, c = x.shape
    xb = x.view(np.uint32)
    buf = np.empty(c, np.uint32)
    rounded = buf.view(np.float32)
    best = 0.0
    best_d = 0.0
    for i in range(n):
        for q in range(c):
            u = xb[i, q]
            buf[q] = (u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) & np.uint32(0xFFFF0000)
        s = 0.0
        d = 0.0
        for q in range(c):
            v = np.float64(x[i, q])
            e = np.float64(rounded[q]) - v
            s += v * v
            d += e * e
        best = max(best, s)
        best_d = max(best_d, d)
    return best, best_d

@njit(cache=True, nogil=True, boundscheck=False, fastmath={"nnan", "ninf", "nsz"})
def column_argmax(s, col_arg):
    """numpy's ``s.argmax(axis=0)`` (first index on ties; no NaN) as an elementwise update across
    the rows, which vectorises (numpy's strided argmax over axis 0 is ~8x slower)."""
    n_rows, n_cols = s.shape
    best = s[0].copy()
    arg = np.zeros(n_cols, np.int32)
    for i in range(1, n_rows):
        for j in range(n_cols):
            v = s[i, j]
            gt = v > best[j]
            best[j] = v if gt else best[j]
            arg[j] = np.int32(i) if gt else arg[j]
    for j in range(n_cols):
        col_arg[j] = arg[j]

@njit(cache=True, nogil=True, boundscheck=False)
def _near_groups(cmax, uk, uj, thr):
    """Per column u (sorted by candidate uk), the row groups whose screen maximum reaches thr[u],
    as offsets into one array. Reads cmax (K, groups, N1) a contiguous row at a time."""
    n_cols = len(uk)
    n_groups = cmax.shape[1]
    off = np.zeros(n_cols + 1, np.int64)
    for fill in range(2):
        if fill:
            for u in range(n_cols):
                off[u + 1] += off[u]
            groups = np.empty(off[n_cols], np.int64)
            pos = off[:n_cols].copy()
        else:
            groups = np.empty(0, np.int64)
            pos = off[:0]
        s = 0
        while s < n_cols:
            e = s
            while e < n_cols and uk[e] == uk[s]:
                e += 1
            for g in range(n_groups):
                row = cmax[uk[s], g]
                for u in range(s, e):
                    if row[uj[u]] >= thr[u]:
                        if fill:
                            groups[pos[u]] = g
                            pos[u] += 1
                        else:
                            off[u + 1] += 1
            s = e
    return off, groups

@njit(cache=True, nogil=True, boundscheck=False)
def _settle_columns(f0, f1, off, groups, ucol, group, margin, col_arg, tie_u, tie_r):
    n0 = f0.shape[0]
    vals = np.empty(n0 + group, np.float32)
    rows = np.empty(n0 + group, np.int64)
    tied = np.zeros(n0 + group, np.bool_)
    cap = len(tie_u)
    n_tied = 0
    for u in range(len(ucol)):
        y = f1[ucol[u]]
        m = 0
        for p in range(off[u], off[u + 1]):
            for r in range(groups[p] * group, min(n0, (groups[p] + 1) * group)):
                vals[m] = _dot(f0[r], y)
                rows[m] = r
                m += 1
        win = _pick(vals, 0, m, margin, tied)
        col_arg[u] = rows[win] if win >= 0 else -1
        if win < 0:
            for p in range(m):
                if tied[p]:
                    if n_tied < cap:
                        tie_u[n_tied] = u
                        tie_r[n_tied] = rows[p]
                    n_tied += 1
                    tied[p] = False
    return n_tied


def settle_columns(f0, f1, cmax, uk, uj, ucol, thr, group, margin, col_arg, tie_u, tie_r):
    """Column argmax of each column u (candidate uk[u], sorted; location uj[u]; row ucol[u] of
    f1) among the query rows of the groups whose screen maximum reaches thr[u]: fp32 dots of
    those rows, then the rows within ``margin`` (2 e32) of the best. A lone one is col_arg[u];
    otherwise col_arg[u] = -1 and the tied (u, row) pairs go to tie_u/tie_r for the exact
    values. Returns the number of tied pairs (call again with larger buffers if it exceeds
    them)."""
    off, groups = _near_groups(cmax, uk, uj, thr)
    return _settle_columns(f0, f1, off, groups, ucol, group, margin, col_arg, tie_u, tie_r)
