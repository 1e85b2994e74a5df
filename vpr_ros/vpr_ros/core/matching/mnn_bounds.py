"""The screen of ``mnn_batched``: its GEMM, the rigorous bound on its error, and thresholds from it.

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
  that gives e ~= 0.0065 (2e ~= 0.013). The screen margin is 2e. The bound uses the largest norms of
  each side, so it also holds for maps that are not exactly normalised.

Thresholds are kept in the screen's own *keys*: fp32 values, or for bf16 the raw bit patterns as
int16. For keys >= 0 the integer order is the float order and every negative value sorts below
every positive one, so maxima are right whenever the true maximum is >= 0; a threshold <= 0 is the
floor key (-32768), which takes everything. The threshold of every bf16 key comes from one
65536-entry table, computed in float64 and rounded down, so a threshold never excludes an entry
that the bound admits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np
import numpy.typing as npt

from vpr_ros.core.matching import mnn_kernels
from vpr_ros.core.errors import InputError

__all__ = ["BlockGemm", "GemmFactory", "NumpyFp32Gemm", "Screen", "error_bound", "bf16_round"]

F32 = npt.NDArray[np.float32]

_U_BF16 = 2.0 ** -8
_CHUNK = 1024  # rows per step of the norm pass, so its temporaries stay in cache


class BlockGemm(Protocol):
    """The screen GEMM of one query against stacked candidates: blocks of S = f0 F^T.

    ``precision`` is "fp32" (blocks are float32) or "bf16" (bf16 inputs, fp32 accumulation, bf16
    output, returned as the raw bit patterns in an int16 array). The core ships numpy's fp32; torch
    screens live in ``vpr_ros.models.backends.mnn_screen`` (the core does not import torch).
    Callers may overwrite a returned block, which stays valid until the next call.
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


def _gamma(c: int) -> float:
    return c * 2.0 ** -24 / (1.0 - c * 2.0 ** -24)


def bf16_round(x: F32) -> F32:
    """Round-to-nearest-even to bf16, returned as fp32 (what torch's ``.bfloat16()`` does; finite x)."""
    bits = np.ascontiguousarray(x, np.float32).view(np.uint32)
    rounded = (bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) & np.uint32(0xFFFF0000)
    return rounded.view(np.float32)


def _max_norms(x: F32, of_bf16_error: bool) -> tuple[float, float]:
    """(largest row norm of x, largest row norm of bf16(x) - x or 0), rounded up: the fp32 sum of
    squares errs by < c 2^-24 relative. bf16(x) - x is exact in fp32 (Sterbenz: within a factor 2).
    Compiled where numba is; else numpy in cache-sized chunks."""
    x = np.ascontiguousarray(x, np.float32)
    if mnn_kernels.AVAILABLE and len(x):
        sq, sq_d = mnn_kernels.max_norms(x)
        return float(np.sqrt(sq)) * (1.0 + 1e-4), float(np.sqrt(sq_d) if of_bf16_error else 0.0) * (1.0 + 1e-4)
    best = best_d = 0.0
    for s in range(0, len(x), _CHUNK):
        part = x[s:s + _CHUNK]
        best = max(best, float(np.max(np.einsum("ij,ij->i", part, part), initial=0.0)))
        if of_bf16_error:
            d = bf16_round(part) - part
            best_d = max(best_d, float(np.max(np.einsum("ij,ij->i", d, d), initial=0.0)))
    return float(np.sqrt(best)) * (1.0 + 1e-4), float(np.sqrt(best_d)) * (1.0 + 1e-4)


def _bounds(f0: F32, f1: F32, precision: str) -> tuple[float, float, float]:
    """(screen e without its output rounding, output rounding bound for |S| >= 1, fp32 e)."""
    g = _gamma(f0.shape[1])
    bf16 = precision == "bf16"
    (n0, d0), (n1, d1) = _max_norms(f0, bf16), _max_norms(f1, bf16)
    e32 = 2.0 * g * n0 * n1 * (1.0 + 1e-6)
    if not bf16:
        return e32, 0.0, e32
    tilde = (n0 + d0) * (n1 + d1)
    base = d0 * n1 + n0 * d1 + d0 * d1 + g * tilde + g * n0 * n1
    return base * (1.0 + 1e-6), _U_BF16 * tilde * (1.0 + g) * (1.0 + 1e-6), e32


def error_bound(f0: F32, f1: F32, precision: str) -> float:
    """Largest |screen - reference| over all pairs of rows of f0 (N0, c) and f1 (N1, c)."""
    base, out, _ = _bounds(f0, f1, precision)
    return base + out


def _round_down_f32(x: npt.NDArray[np.float64]) -> F32:
    """The largest float32 <= x, per element."""
    f = x.astype(np.float32)
    over = f.astype(np.float64) > x
    f[over] = np.nextafter(f[over], np.float32(-np.inf))
    return f


class Screen:
    """A screen GEMM plus what its precision implies: bounds, keys and thresholds."""

    def __init__(self, f0: F32, f: F32, gemm: GemmFactory) -> None:
        self.gemm = gemm(f0, f)
        self.precision = self.gemm.precision
        if self.precision not in ("fp32", "bf16"):
            raise InputError(f"screen precision {self.precision!r} is unknown; a BlockGemm is fp32 or bf16")
        self.base, self.out, self.e32 = _bounds(f0, f, self.precision)
        self.floor = np.int16(-32768) if self.precision == "bf16" else np.float32(-np.inf)
        self.itemsize = 2 if self.precision == "bf16" else 4
        #: Threshold key of every bf16 key, indexed by its bits read as uint16 (None for fp32).
        self.table = self._bf16_table() if self.precision == "bf16" else None

    def block(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        return self.gemm.block(r0, r1, c0, c1)

    def _margin(self, v: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """2e for entries compared with a screen maximum v >= 0. A bf16 output below 1 in magnitude
        rounds by at most 2^-9 (half its ulp), so maxima clear of 1 get that."""
        if self.precision != "bf16":
            return np.full_like(v, 2.0 * self.base)
        return 2.0 * (self.base + np.where(v + self.base + 2.0 ** -8 < 1.0, 2.0 ** -9, self.out))

    def _bf16_table(self) -> npt.NDArray[np.int16]:
        """Threshold key of every bf16 key, indexed by the key's bits read as uint16."""
        bits = np.arange(65536, dtype=np.uint32)
        with np.errstate(invalid="ignore"):  # the NaN patterns
            v = (bits << np.uint32(16)).view(np.float32).astype(np.float64)
            thr = v - self._margin(v)
            ok = thr > 0  # False for NaN and for thresholds <= 0: the floor key, which takes all
        f = _round_down_f32(np.where(ok, thr, 1.0)).view(np.uint32).astype(np.int64)
        key = (f + 0xFFFF) >> 16  # the smallest bf16 >= f (bf16 values <= thr only add entries)
        return np.where(ok, key, -32768).astype(np.int16)

    def thresholds(self, keys: np.ndarray) -> np.ndarray:
        """Per screen maximum (a key), the smallest key an entry needs to lie within 2e of it."""
        if self.table is not None:
            return self.table[np.asarray(keys, np.int16).view(np.uint16)]
        v = np.asarray(keys, np.float64)
        return _round_down_f32(v - self._margin(v))
