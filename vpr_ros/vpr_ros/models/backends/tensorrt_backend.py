"""TensorRT backend (NVIDIA GPUs, Jetson): a TensorRT engine built from our ONNX export, or torch-tensorrt.

Import-gated: nothing here imports ``tensorrt`` / ``torch_tensorrt`` until an engine is requested, and a
machine without CUDA or TensorRT gets a :class:`ModelLoadError` saying what to install. Engines are
cached on disk under a key made of the model hash, input size, batch range, precision, GPU name and
TensorRT version, since an engine is only valid for exactly that combination and takes minutes to build.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import logging
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from vpr_ros.core.errors import ConfigError, ModelLoadError
from vpr_ros.models.backends import onnx_backend

__all__ = ["EngineSettings", "module_digest", "engine_cache_key", "builder_arguments", "trtexec_command",
           "export_onnx", "TensorRTBackend", "load_tensorrt_backend", "PRECISIONS"]

log = logging.getLogger(__name__)

PRECISIONS = ("fp16", "fp32")
INPUT_NAME = "images"  # the name onnx_backend.export_onnx gives the input
OUTPUT_NAMES = ("global", "local")


@dataclasses.dataclass(frozen=True)
class EngineSettings:
    """What an engine is built for. The batch range is an optimisation profile (dynamic batch)."""

    input_hw: tuple[int, int]
    precision: str = "fp16"
    min_batch: int = 1
    opt_batch: int = 1
    max_batch: int = 16
    workspace_mib: int = 4096

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"tensorrt precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}")
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise ConfigError(f"tensorrt batch range needs 1 <= min <= opt <= max, got "
                              f"{self.min_batch}/{self.opt_batch}/{self.max_batch}")

    def shape(self, batch: int) -> tuple[int, int, int, int]:
        return (batch, 3, *self.input_hw)


def module_digest(module: nn.Module) -> str:
    """sha256 over every state-dict entry's name, shape, dtype and bytes (the "model hash")."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def engine_cache_key(model_hash: str, settings: EngineSettings, gpu_name: str, trt_version: str) -> str:
    """Deterministic file-name-safe key for a cached engine."""
    fields = [model_hash, "x".join(map(str, settings.input_hw)), settings.precision,
              f"b{settings.min_batch}-{settings.opt_batch}-{settings.max_batch}", gpu_name, trt_version]
    return hashlib.sha256("|".join(fields).encode()).hexdigest()[:32]


def builder_arguments(settings: EngineSettings) -> dict[str, Any]:
    """Builder options shared by the Python builder and ``trtexec``: profile shapes, flags, workspace."""
    return {
        "input": INPUT_NAME,
        "min_shape": settings.shape(settings.min_batch),
        "opt_shape": settings.shape(settings.opt_batch),
        "max_shape": settings.shape(settings.max_batch),
        "fp16": settings.precision == "fp16",
        "workspace_bytes": settings.workspace_mib << 20,
    }


def trtexec_command(onnx_path: str | Path, engine_path: str | Path, settings: EngineSettings) -> list[str]:
    """The equivalent ``trtexec`` call (documented alternative on Jetson)."""
    args = builder_arguments(settings)

    def dims(shape: tuple[int, ...]) -> str:
        return f"{args['input']}:{'x'.join(map(str, shape))}"

    cmd = ["trtexec", f"--onnx={onnx_path}", f"--saveEngine={engine_path}",
           f"--minShapes={dims(args['min_shape'])}", f"--optShapes={dims(args['opt_shape'])}",
           f"--maxShapes={dims(args['max_shape'])}", f"--memPoolSize=workspace:{settings.workspace_mib}M"]
    if args["fp16"]:
        cmd.append("--fp16")
    return cmd


def export_onnx(module: nn.Module, path: str | Path, input_hw: tuple[int, int], opset: int = 17) -> Path:
    """Export ``module`` with the ONNX Runtime backend's exporter (one graph layout for both:
    input ``images``, outputs ``global`` and ``local``, dynamic batch); returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx_backend.export_onnx(module, path, tuple(input_hw), opset)
    return path


def _require_cuda(device: str) -> None:
    if not torch.cuda.is_available():
        raise ModelLoadError(
            f"the tensorrt backend needs an NVIDIA GPU with CUDA, but torch.cuda.is_available() is False "
            f"(device {device!r}); use backend 'onnxruntime' or 'torch' on this machine, or install a "
            "CUDA build of torch (JetPack wheel on Jetson)")


def _tensorrt_flavour() -> str:
    if importlib.util.find_spec("tensorrt") is not None:
        return "tensorrt"
    if importlib.util.find_spec("torch_tensorrt") is not None:
        return "torch_tensorrt"
    raise ModelLoadError(
        "the tensorrt backend needs TensorRT: `pip install tensorrt` (desktop) or the JetPack "
        "python3-libnvinfer package (Jetson), or torch-tensorrt matching your torch; see docs/models.md")


class TensorRTBackend:
    """Runs a built engine: ``run(x)`` with x (N, 3, H, W) float32 -> (global (N, D), local or None)."""

    def __init__(self, engine: Any, device: torch.device, settings: EngineSettings) -> None:
        import tensorrt as trt

        self._trt = trt
        self.engine = engine
        self.context = engine.create_execution_context()
        self.device = device
        self.settings = settings
        self.outputs = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)
                        if engine.get_tensor_mode(engine.get_tensor_name(i)) == trt.TensorIOMode.OUTPUT]

    def run(self, x: npt.NDArray[np.float32]) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32] | None]:
        if not self.settings.min_batch <= x.shape[0] <= self.settings.max_batch:
            raise ConfigError(f"batch {x.shape[0]} outside the engine's range "
                              f"{self.settings.min_batch}..{self.settings.max_batch}")
        inp = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device)
        self.context.set_input_shape(INPUT_NAME, tuple(inp.shape))
        self.context.set_tensor_address(INPUT_NAME, inp.data_ptr())
        results: dict[str, torch.Tensor] = {}
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            results[name] = torch.empty(shape, dtype=torch.float32, device=self.device)
            self.context.set_tensor_address(name, results[name].data_ptr())
        stream = torch.cuda.current_stream(self.device)
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise ModelLoadError("TensorRT execution failed; rebuild the engine (delete the cache file)")
        stream.synchronize()
        local = results.get("local")
        return results["global"].cpu().numpy(), None if local is None else local.cpu().numpy()


class TorchTensorRTBackend:
    """torch-tensorrt compiled module with the same ``run`` interface."""

    def __init__(self, compiled: nn.Module, device: torch.device) -> None:
        self.compiled = compiled
        self.device = device

    def run(self, x: npt.NDArray[np.float32]) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32] | None]:
        with torch.no_grad():
            g, loc = self.compiled(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device))
        return g.float().cpu().numpy(), None if loc is None else loc.float().cpu().numpy()


def _build_engine(onnx_path: Path, settings: EngineSettings) -> bytes:
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelLoadError(f"TensorRT cannot parse {onnx_path}: {errors}")
    args = builder_arguments(settings)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, args["workspace_bytes"])
    if args["fp16"]:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    profile.set_shape(args["input"], args["min_shape"], args["opt_shape"], args["max_shape"])
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ModelLoadError("TensorRT engine build failed; see the TensorRT log above")
    return bytes(serialized)


def load_tensorrt_backend(spec: Any, module: nn.Module, model_id: str, device: str = "cuda",
                          precision: str = "fp16", cache_dir: str | Path | None = None,
                          max_batch: int = 16) -> TensorRTBackend | TorchTensorRTBackend:
    """Build (or load from the cache) a TensorRT engine for ``module`` at ``spec.input_size``.

    Raises:
        ModelLoadError: no CUDA, no TensorRT, or the build failed.
    """
    _require_cuda(device)
    flavour = _tensorrt_flavour()
    settings = EngineSettings(input_hw=tuple(spec.input_size), precision=precision, max_batch=max_batch)
    dev = torch.device(device if device.startswith("cuda") else "cuda")
    module = module.to(dev).eval()
    if flavour == "torch_tensorrt":
        import torch_tensorrt

        args = builder_arguments(settings)
        inputs = [torch_tensorrt.Input(min_shape=args["min_shape"], opt_shape=args["opt_shape"],
                                       max_shape=args["max_shape"], dtype=torch.float32)]
        precisions = {torch.half, torch.float32} if args["fp16"] else {torch.float32}
        return TorchTensorRTBackend(torch_tensorrt.compile(module, inputs=inputs, enabled_precisions=precisions), dev)
    import tensorrt as trt

    from vpr_ros.models.cache import cache_dir as user_cache

    root = Path(cache_dir) if cache_dir else user_cache("tensorrt")
    key = engine_cache_key(module_digest(module), settings, torch.cuda.get_device_name(dev), trt.__version__)
    engine_file = root / f"{model_id.replace('@', '_').replace('/', '_')}-{key}.engine"
    if not engine_file.is_file():
        onnx_path = export_onnx(module, root / f"{key}.onnx", settings.input_hw)
        log.info("building TensorRT engine %s (minutes on Jetson)", engine_file)
        tmp = engine_file.with_suffix(".tmp")
        tmp.write_bytes(_build_engine(onnx_path, settings))
        tmp.replace(engine_file)
    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(engine_file.read_bytes())
    if engine is None:
        raise ModelLoadError(f"cannot deserialize {engine_file}; delete it to rebuild")
    return TensorRTBackend(engine, dev, settings)
