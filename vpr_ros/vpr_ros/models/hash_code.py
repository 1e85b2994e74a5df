"""Binary codes of hashing models (SelaVPR++ ``-rerank``): the sign rule, the packing, and a hashing forward.

The rule is the official one (MODELS_3.md §1.6-1.7): bit k is 1 where z[k] >= 0 (an exact zero, and -0.0,
give 1) and 0 otherwise; the 512 bits are packed MSB first, bit k in byte k // 8 at position 7 - k % 8,
which is NumPy's ``packbits(axis=1)`` order and what ``faiss.IndexBinaryFlat`` reads. A hashing module
offers ``hash_dim`` (bits), ``hash(x) -> (z, packed)`` and ``forward_with_hash(x) -> (global, local, z)``.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch

__all__ = ["pack_bits", "pack_bits_numpy", "hash_dim", "run_with_hash"]


def pack_bits(z: torch.Tensor) -> torch.Tensor:
    """(N, B) float codes -> (N, B / 8) uint8, bit = z >= 0, MSB first (B a multiple of 8)."""
    if z.ndim != 2 or z.shape[1] % 8:
        raise ValueError(f"hash codes must be (N, B) with B a multiple of 8, got {tuple(z.shape)}")
    bits = (z >= 0).to(torch.int32).reshape(z.shape[0], -1, 8)
    weights = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.int32, device=z.device)
    return (bits * weights).sum(dim=-1).to(torch.uint8)


def pack_bits_numpy(z: np.ndarray) -> npt.NDArray[np.uint8]:
    """The NumPy form of :func:`pack_bits` (the official code's ``np.packbits`` on ``z >= 0``)."""
    return np.packbits(np.asarray(z) >= 0, axis=1)


def hash_dim(module: torch.nn.Module) -> int:
    """Bits of ``module``'s binary code, 0 for a model without one."""
    dim = getattr(module, "hash_dim", 0)
    return int(dim) if isinstance(dim, int) else 0


def run_with_hash(runner: object, module: torch.nn.Module,
                  x: npt.NDArray[np.float32]) -> tuple[np.ndarray, np.ndarray | None, npt.NDArray[np.uint8]]:
    """Global, local and packed hash of a preprocessed batch (N, 3, H, W).

    With the torch backend one forward gives all three (the frozen ViT runs once for both side streams),
    under the runner's device and precision. ONNX Runtime and TensorRT graphs carry only the global and
    local outputs, so there the runner gives those and the torch module (fp32, CPU) computes the hash:
    a second forward, about doubling the time per keyframe.
    """
    from vpr_ros.models.backends.torch_backend import TorchRunner

    if isinstance(runner, TorchRunner) and runner.module is module:
        xt = torch.from_numpy(np.ascontiguousarray(x)).to(runner.device)
        with torch.inference_mode(), torch.autocast(runner.device.type, dtype=runner.autocast,
                                                    enabled=runner.autocast is not None):
            g, loc, z = module.forward_with_hash(xt)  # type: ignore[operator]
        local = None if loc is None else loc.float().cpu().numpy()
        return g.float().cpu().numpy(), local, pack_bits(z.float()).cpu().numpy()
    g_np, loc_np = runner.run(x)  # type: ignore[attr-defined]
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(next(module.parameters()).device)
    with torch.inference_mode():
        _, packed = module.hash(xt)  # type: ignore[operator]
    return g_np, loc_np, packed.cpu().numpy()
