"""torch screens for ``core.matching.mnn_batched`` (the core itself does not import torch).

``torch_gemm("bf16")`` runs the blocks through oneDNN's bf16 GEMM (fp32 accumulation, bf16 output)
and hands them over as raw bit patterns; ``torch_gemm("fp32")`` through torch's fp32 GEMM (MKL).
Threads are torch's (``torch.set_num_threads``).
"""

from __future__ import annotations

import threading

import numpy as np
import torch

from vpr_ros.core.errors import InputError

__all__ = ["TorchGemm", "torch_gemm", "screen", "SCREENS", "LargeMapsScreen", "native_bf16", "configured_screen"]

#: Screen names of ``vpr-ros bench verify``: "fp32" is numpy's (core), the rest are here.
SCREENS = ("fp32", "fp32-torch", "bf16")


class _Buffers(threading.local):
    """Tensors kept across calls by one factory, per thread: the bf16 copies of the inputs and the
    output block. A fresh 19 MB bf16 copy per call (K=20 SelaVPR maps) page-faults every time; a
    thread runs one screen at a time, so its buffers are free again at the next call."""

    def take(self, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        n = int(np.prod(shape))
        buf = getattr(self, name, None)
        if buf is None or buf.dtype != dtype or buf.numel() < n:
            buf = torch.empty(n, dtype=dtype)
            setattr(self, name, buf)
        return buf[:n].view(shape)


class TorchGemm:
    """Blocks of S = f0 F^T in torch, as numpy arrays (float32, or bf16 bit patterns as int16)."""

    def __init__(self, f0: np.ndarray, f: np.ndarray, precision: str, buffers: _Buffers | None = None) -> None:
        if precision not in ("fp32", "bf16"):
            raise InputError(f"torch screen precision {precision!r} is unknown; use fp32 or bf16")
        self.precision = precision
        self._dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        self._buffers = buffers or _Buffers()
        self.a = self._input("a", f0)
        self.b = self._input("b", f).T

    def _input(self, name: str, x: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(x, np.float32))
        if self._dtype == torch.float32:
            return t
        return self._buffers.take(name, tuple(t.shape), self._dtype).copy_(t)

    def block(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """S[r0:r1, c0:c1] in one output buffer reused across calls (no page faults per block): a
        block is valid until the next call, as ``BlockGemm`` allows."""
        out = self._buffers.take("out", (r1 - r0, c1 - c0), self._dtype)
        torch.mm(self.a[r0:r1], self.b[:, c0:c1], out=out)
        return out.view(torch.int16).numpy() if self.precision == "bf16" else out.numpy()


def torch_gemm(precision: str):  # -> core.matching.mnn_batched.GemmFactory
    """The factory ``mnn_pairs_many(..., gemm=...)`` takes; it keeps its buffers across calls
    (per thread)."""
    if precision not in ("fp32", "bf16"):
        raise InputError(f"torch screen precision {precision!r} is unknown; use fp32 or bf16")
    buffers = _Buffers()
    return lambda f0, f: TorchGemm(f0, f, precision, buffers)


def screen(name: str):
    """Factory by bench name (one of SCREENS); None is numpy's fp32, the core's default."""
    if name not in SCREENS:
        raise InputError(f"MNN screen {name!r} is unknown; use one of {', '.join(SCREENS)}")
    return None if name == "fp32" else torch_gemm("fp32" if name == "fp32-torch" else "bf16")


class LargeMapsScreen:
    """A screen for the large maps only: ``mnn_pairs_many`` gives maps whose whole similarity matrix
    fits one block the plain fp32 product (faster there, and exact), the rest this screen."""

    small_maps_plain = True

    def __init__(self, factory) -> None:
        self.factory = factory

    def __call__(self, f0: np.ndarray, f: np.ndarray) -> TorchGemm:
        return self.factory(f0, f)


def native_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX), where oneDNN's bf16 GEMM is
    ~3.5x its fp32 GEMM (docs/benchmarks.md); elsewhere bf16 may be emulated and slower than fp32."""
    if not torch.backends.mkldnn.is_available():
        return False
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(p is not None and p() for p in probes)


def configured_screen(name: str):
    """The screen of ``verify.mnn_screen`` (auto, fp32, bf16) for ``Verifier(mnn_gemm=...)``; None is
    the core's default (numpy fp32). Every choice gives the same counts."""
    if name not in ("auto", "fp32", "bf16"):
        raise InputError(f"verify.mnn_screen {name!r} is unknown; use auto, fp32 or bf16")
    if name == "fp32" or (name == "auto" and not native_bf16()):
        return None
    return LargeMapsScreen(torch_gemm("bf16"))
