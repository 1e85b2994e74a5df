"""torch screens for ``core.mnn_batched`` (the core itself does not import torch).

``torch_gemm("bf16")`` runs the blocks through oneDNN's bf16 GEMM (fp32 accumulation, bf16 output)
and hands them over as raw bit patterns; ``torch_gemm("fp32")`` through torch's fp32 GEMM (MKL).
Threads are torch's (``torch.set_num_threads``).
"""

from __future__ import annotations

import numpy as np
import torch

from vpr_ros.core.errors import InputError

__all__ = ["TorchGemm", "torch_gemm", "screen", "SCREENS"]

#: Screen names of ``vpr-ros bench verify``: "fp32" is numpy's (core), the rest are here.
SCREENS = ("fp32", "fp32-torch", "bf16")


class TorchGemm:
    """Blocks of S = f0 F^T in torch, as numpy arrays (float32, or bf16 bit patterns as int16)."""

    def __init__(self, f0: np.ndarray, f: np.ndarray, precision: str) -> None:
        if precision not in ("fp32", "bf16"):
            raise InputError(f"torch screen precision {precision!r} is unknown; use fp32 or bf16")
        self.precision = precision
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        self.a = torch.from_numpy(f0).to(dtype)
        self.b = torch.from_numpy(f).to(dtype).T
        self._out = torch.empty(0, dtype=dtype)

    def block(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """S[r0:r1, c0:c1] in one output buffer reused across calls (no page faults per block): a
        block is valid until the next call, as ``BlockGemm`` allows."""
        n = (r1 - r0) * (c1 - c0)
        if self._out.numel() < n:
            self._out = torch.empty(n, dtype=self._out.dtype)
        out = torch.mm(self.a[r0:r1], self.b[:, c0:c1], out=self._out[:n].view(r1 - r0, c1 - c0))
        return out.view(torch.int16).numpy() if self.precision == "bf16" else out.numpy()


def torch_gemm(precision: str):  # -> core.mnn_batched.GemmFactory
    """The factory ``mnn_pairs_many(..., gemm=...)`` takes."""
    if precision not in ("fp32", "bf16"):
        raise InputError(f"torch screen precision {precision!r} is unknown; use fp32 or bf16")
    return lambda f0, f: TorchGemm(f0, f, precision)


def screen(name: str):
    """Factory by bench name (one of SCREENS); None is numpy's fp32, the core's default."""
    if name not in SCREENS:
        raise InputError(f"MNN screen {name!r} is unknown; use one of {', '.join(SCREENS)}")
    return None if name == "fp32" else torch_gemm("fp32" if name == "fp32-torch" else "bf16")
