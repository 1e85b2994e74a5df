"""Inference backends. Each returns a runner with the same small contract, so ``VprModel`` does not
care which one runs:

``runner.run(x)``: x (N, 3, H, W) float32 numpy -> (global (N, D), local (N, h, w, c) or None),
numpy arrays in the backend's output precision.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import numpy.typing as npt

__all__ = ["Runner"]


class Runner(Protocol):
    """What every backend returns (torch, ONNX Runtime, TensorRT)."""

    def run(self, x: npt.NDArray[np.float32]) -> tuple[np.ndarray, np.ndarray | None]: ...
