"""Compiled loops of the exact MNN (numba; optional: without it numpy runs the same steps).

- ``scan_block``: the row pass of one screen block in one sweep a row at a time: the column maxima
  per group of query rows, the maxima of 64 *strided chunks* (chunk c holds the entries j with
  j % 64 == c: plain elementwise and vertical maxima, which LLVM vectorises), the row maximum, its
  threshold, and the entries at or above it, read only from the chunks whose maximum reaches it.
- ``settle_groups`` / ``settle_columns``: fp32 dot products of the ambiguous rows' competitors and of
  the query rows near each relevant column's maximum, and who is within the fp32 bound of the best.
- ``max_norms``: the norms the error bound needs; ``column_argmax``: the plain product's argmax
  over axis 0.

All work on the screen's keys (int16 bf16 bit patterns or float32) and are single-threaded.
"""

from __future__ import annotations

import importlib.util
import os

__all__ = ["AVAILABLE"]  # and, loaded on first use, the kernels of _KERNELS

#: numba is pinned in requirements/base.txt; without it (or with VPR_ROS_MNN_KERNELS=0, to compare
#: or rule the kernels out) numpy runs the same steps. numba itself (~0.3 s) and the kernels load on
#: the first verification, not when vpr_ros is imported.
AVAILABLE = os.environ.get("VPR_ROS_MNN_KERNELS", "1") != "0" and importlib.util.find_spec("numba") is not None

_KERNELS = frozenset({"scan_block", "settle_groups", "max_norms", "column_argmax", "settle_columns"})


def __getattr__(name: str):
    if name in _KERNELS:
        from vpr_ros.core.matching import mnn_jit

        return getattr(mnn_jit, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
