"""Compiled row-pass kernels for ``mnn_rows`` (numba; optional: without it the numpy pass runs).

Two sweeps per screen block of one candidate, both over data in cache:

1. ``reduce_block``: per row, the column maxima of its group of query rows and the maxima of its
   64 *strided chunks* (chunk c holds the entries j with j % 64 == c); the row maximum is the
   largest chunk maximum. Every loop is a plain elementwise or vertical max, which LLVM vectorises.
2. ``collect_hits``: per row, the entries at or above the row's threshold, read only from chunks
   whose maximum reaches it (a few chunks of ~60 entries per row), the first index of the maximum
   (numpy's argmax), and for rows with more than one such entry all of them.

Both work on any dtype numpy orders like the screen keys (int16 bf16 bit patterns, float32).
"""

from __future__ import annotations

import numpy as np

__all__ = ["AVAILABLE", "CHUNKS", "reduce_block", "collect_hits", "settle_groups", "max_norms", "column_argmax"]

CHUNKS = 64

try:  # numba is optional (requirements/fast_mnn.txt); the numpy row pass is the fallback
    from numba import njit
except ImportError:  # pragma: no cover - exercised where numba is not installed
    AVAILABLE = False
    reduce_block = collect_hits = settle_groups = max_norms = column_argmax = None
else:
    AVAILABLE = True

    @njit(cache=True, nogil=True, boundscheck=False)
    def reduce_block(s, cmax, g0, group, chmax, rowmax):  # pragma: no cover - compiled
        """cmax[g0 + i // group] = max of the group's rows of s (R, N1); chmax[i, c] = max of
        s[i, c::64]; rowmax[i] = max of s[i]."""
        n_rows, n1 = s.shape
        full = n1 // CHUNKS
        acc = np.empty(CHUNKS, s.dtype)
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
            m = acc[0]
            for c in range(CHUNKS):
                chmax[i, c] = acc[c]
                m = max(m, acc[c])
            rowmax[i] = m

    @njit(cache=True, nogil=True, boundscheck=False)
    def collect_hits(s, chmax, rowmax, thr, arg, out_r, out_j, out_k):  # pragma: no cover - compiled
        """arg[i] = first j with s[i, j] == rowmax[i]; every entry >= thr[i] of the rows that have
        more than one goes to out_* (row, j, key). Returns how many there are, which may exceed
        the buffers (then only the first len(out_r) are written: call again with larger ones)."""
        n_rows, n1 = s.shape
        cap = len(out_r)
        n = 0
        for i in range(n_rows):
            t = thr[i]
            top = rowmax[i]
            start = n
            first = n1
            for c in range(CHUNKS):
                if chmax[i, c] >= t:
                    for j in range(c, n1, CHUNKS):
                        v = s[i, j]
                        if v >= t:
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
    def settle_groups(f0, f1, rows, cols, starts, margin, win, tied):  # pragma: no cover - compiled
        """Competitor pairs (rows[p], cols[p]) in contiguous groups starts[g]:starts[g+1]: an fp32
        dot each (any order: within the fp32 bound of the reference), then per group the pairs
        within ``margin`` (2 e32) of its best. A lone one wins (win[g] = its position); otherwise
        win[g] = -1 and tied[p] marks the pairs the exact float64 values must decide."""
        c = f0.shape[1]
        v = np.empty(len(rows), np.float32)
        for g in range(len(starts) - 1):
            best = -np.inf
            for p in range(starts[g], starts[g + 1]):
                acc = np.float32(0.0)
                x, y = f0[rows[p]], f1[cols[p]]
                for q in range(c):
                    acc += x[q] * y[q]
                v[p] = acc
                best = max(best, np.float64(acc))
            thr = best - margin
            n = 0
            for p in range(starts[g], starts[g + 1]):
                if v[p] >= thr:
                    n += 1
                    win[g] = p
            if n > 1:
                win[g] = -1
                for p in range(starts[g], starts[g + 1]):
                    tied[p] = v[p] >= thr

    @njit(cache=True, nogil=True, boundscheck=False, fastmath={"reassoc", "contract"})
    def max_norms(x):  # pragma: no cover - compiled
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
    def column_argmax(s, col_arg):  # pragma: no cover - compiled
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
