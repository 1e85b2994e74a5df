"""PyTorch backend: CPU fp32/bf16, CUDA fp32/fp16/bf16 (autocast).

CPU bf16 stores the DINOv2 backbone's weights in bf16 and keeps the heads (GeM with its learned
power, SelaVPR's transposed convs, CricaVPR's encoder) in fp32: on AVX512-BF16 CPUs that runs the
backbone's matrix products at the bf16 rate without autocast's per-call weight casts (SelaVPR:
1.87x over eager fp32 against autocast's 1.74x, ``docs/benchmarks.md``). Models without a DINOv2
backbone (``lite0-gem``) use autocast.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch

from vpr_ros.core.errors import ConfigError, ModelLoadError
from vpr_ros.models.dinov2 import DinoVisionTransformer

__all__ = ["TorchRunner", "load_torch_backend"]

_PRECISIONS = {"cpu": ("fp32", "bf16"), "cuda": ("fp32", "fp16", "bf16")}
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class TorchRunner:
    """Runs a torch module in inference mode on one device.

    ``autocast`` is the dtype of an autocast region around the forward (None: none, because the
    module already holds its weights in the precision it should run in).
    """

    def __init__(self, module: torch.nn.Module, device: str, precision: str,
                 autocast: torch.dtype | None = None) -> None:
        self.module = module
        self.device = torch.device(device)
        self.precision = precision
        self.autocast = autocast

    def run(self, x: npt.NDArray[np.float32]) -> tuple[np.ndarray, np.ndarray | None]:
        """(N, 3, H, W) float32 -> (global (N, D), local (N, h, w, c) or None), float32 numpy."""
        xt = torch.from_numpy(np.ascontiguousarray(x)).to(self.device)
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=self.autocast,
                                                    enabled=self.autocast is not None):
            global_, local = self.module(xt)
        local_np = None if local is None else local.float().cpu().numpy()
        return global_.float().cpu().numpy(), local_np


def load_torch_backend(module: torch.nn.Module, device: str, precision: str, threads: int) -> TorchRunner:
    """Move ``module`` to ``device`` in eval mode and wrap it (CPU bf16 casts its backbone in place).

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
    module = module.to(device).eval()
    autocast = _DTYPES.get(precision)
    backbone = getattr(module, "backbone", None)
    if device == "cpu" and precision == "bf16" and isinstance(backbone, DinoVisionTransformer):
        backbone.to(torch.bfloat16)
        autocast = None
    return TorchRunner(module, device, precision, autocast)
