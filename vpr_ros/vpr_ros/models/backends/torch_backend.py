"""PyTorch backend: CPU fp32/bf16 (autocast), CUDA fp32/fp16/bf16 (autocast)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch

from vpr_ros.core.errors import ConfigError, ModelLoadError

__all__ = ["TorchRunner", "load_torch_backend"]

_PRECISIONS = {"cpu": ("fp32", "bf16"), "cuda": ("fp32", "fp16", "bf16")}
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class TorchRunner:
    """Runs a torch module in inference mode on one device."""

    def __init__(self, module: torch.nn.Module, device: str, precision: str) -> None:
        self.module = module
        self.device = torch.device(device)
        self.precision = precision

    def run(self, x: npt.NDArray[np.float32]) -> tuple[np.ndarray, np.ndarray | None]:
        """(N, 3, H, W) float32 -> (global (N, D), local (N, h, w, c) or None), float32 numpy."""
        xt = torch.from_numpy(np.ascontiguousarray(x)).to(self.device)
        dtype = _DTYPES.get(self.precision)
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=dtype,
                                                    enabled=dtype is not None):
            global_, local = self.module(xt)
        local_np = None if local is None else local.float().cpu().numpy()
        return global_.float().cpu().numpy(), local_np


def load_torch_backend(module: torch.nn.Module, device: str, precision: str, threads: int) -> TorchRunner:
    """Move ``module`` to ``device`` in eval mode and wrap it.

    Raises:
        ConfigError: a precision the device does not support with torch.
        ModelLoadError: CUDA requested but not available.
    """
    if device not in _PRECISIONS:
        raise ConfigError(f"model.device={device!r}; choose one of {', '.join(_PRECISIONS)}")
    if precision not in _PRECISIONS[device]:
        hint = "; int8 needs backend onnxruntime" if precision == "int8" else ""
        raise ConfigError(f"torch backend on {device} supports precision "
                          f"{', '.join(_PRECISIONS[device])}, not {precision!r}{hint}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("model.device=cuda but torch sees no CUDA device (CPU-only torch build "
                             "or no GPU/driver); set model.device=cpu or install a CUDA torch build")
    # The caller asked for a thread budget (e.g. to leave cores to a SLAM tracker); torch's is global.
    torch.set_num_threads(threads)
    return TorchRunner(module.to(device).eval(), device, precision)
