"""ONNX Runtime backend: export the torch module once, cache the graph, run it on CPU (fp32 or
dynamic int8) or CUDA.

The graph is exported per input size (only the batch axis is dynamic), so each (H, W) the model
is fed gets its own cached file and session; with fixed-size presets that is exactly one.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

from vpr_ros.core.errors import ConfigError, ModelLoadError
from vpr_ros.models.cache import atomic_write

__all__ = ["OPSET", "OrtRunner", "export_onnx", "onnx_cache_path", "load_onnx_backend"]

log = logging.getLogger(__name__)

OPSET = 17
PRECISIONS = ("fp32", "int8")


class _GlobalOnly(torch.nn.Module):
    """Drops the ``None`` local output so the graph has exactly the outputs that exist."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)[0]


def export_onnx(module: torch.nn.Module, path: Path, input_size: tuple[int, int], opset: int = OPSET) -> None:
    """Export ``module`` (CPU, fp32) to ``path``: input ``images`` (N, 3, H, W), outputs ``global``
    and, when the model has a local head, ``local``; the batch axis is dynamic."""
    module = module.to("cpu").float().eval()
    dummy = torch.zeros(1, 3, *input_size, dtype=torch.float32)
    with torch.inference_mode():
        has_local = module(dummy)[1] is not None
    names = ["global", "local"] if has_local else ["global"]
    to_export = module if has_local else _GlobalOnly(module)
    axes = {name: {0: "batch"} for name in ["images", *names]}
    with warnings.catch_warnings():
        # Shape-derived padding becomes constants on purpose (fixed H, W per graph).
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        # Reversed-slice pad bookkeeping is folded by ORT at session start instead.
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")
        torch.onnx.export(to_export, (dummy,), str(path), input_names=["images"], output_names=names,
                          dynamic_axes=axes, opset_version=opset, do_constant_folding=True,
                          dynamo=False)


def onnx_cache_path(cache_dir: Path, model_key: str, input_size: tuple[int, int], opset: int,
                    precision: str) -> Path:
    """Cache file name encoding everything that changes the graph (hloc-style config names)."""
    safe = "".join(c if c.isalnum() or c in "@-_.+" else "_" for c in model_key)
    return cache_dir / f"{safe}_{input_size[0]}x{input_size[1]}_opset{opset}_{precision}.onnx"


def _quantize_int8(src: Path, dst: Path) -> None:
    """Dynamic int8 (weights int8 per output channel, activations quantised on the fly), depthwise
    convs kept fp32.

    Quantising depthwise convs per-tensor raised the Lite0 global-descriptor drift (1 - cos) from
    ~0.05 to ~0.17, and ONNX Runtime has no fast int8 depthwise kernel anyway. Per-channel weight
    scales halve the drift of a real DINOv2 ViT-S (worst patch-token cosine 0.955 -> 0.988, GeM
    descriptor 1 - cos 2.0e-3 -> 6.7e-4) at the same speed.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    # Folds the constant pad arithmetic and infers shapes, as ORT recommends before quantising.
    pre = dst.with_name(dst.name + ".pre.onnx")
    # The quantiser logs one INFO line per tensor through the root logger; keep the console readable.
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))
    try:
        quant_pre_process(str(src), str(pre))
        graph = onnx.load(str(pre)).graph
        depthwise = [n.name for n in graph.node if n.op_type == "Conv"
                     and any(a.name == "group" and a.i > 1 for a in n.attribute)]
        quantize_dynamic(str(pre), str(dst), weight_type=QuantType.QInt8, nodes_to_exclude=depthwise,
                         per_channel=True)
    finally:
        root.setLevel(level)
        pre.unlink(missing_ok=True)


class OrtRunner:
    """Lazily exports and opens one ONNX Runtime session per input size."""

    def __init__(self, module: torch.nn.Module, model_key: str, device: str, precision: str,
                 threads: int, cache_dir: Path, opset: int = OPSET) -> None:
        self.module = module
        self.model_key = model_key
        self.device = device
        self.precision = precision
        self.threads = threads
        self.cache_dir = cache_dir
        self.opset = opset
        self._sessions: dict[tuple[int, int], object] = {}
        #: graph file used for each input size (for logs and tests).
        self.paths: dict[tuple[int, int], Path] = {}

    def graph_path(self, input_size: tuple[int, int]) -> Path:
        """The cached graph for ``input_size``, exported (and quantised) on first use.

        Raises:
            ModelLoadError: export or quantisation failed, or the cache directory is not writable.
        """
        fp32 = onnx_cache_path(self.cache_dir, self.model_key, input_size, self.opset, "fp32")
        if not fp32.exists():
            log.info("exporting %s at %s to %s", self.model_key, input_size, fp32)
            try:
                atomic_write(fp32, lambda tmp: export_onnx(self.module, tmp, input_size, self.opset))
            except (RuntimeError, torch.onnx.errors.OnnxExporterError) as exc:
                raise ModelLoadError(f"ONNX export of {self.model_key} failed: {exc}; "
                                     "use backend torch") from exc
            except OSError as exc:
                raise ModelLoadError(f"cannot write the ONNX graph cache {fp32}: {exc}; set VPR_ROS_CACHE "
                                     "to a writable directory with free space") from exc
        if self.precision == "fp32":
            return fp32
        # "int8pc": per-channel weights; graphs cached by older versions (per-tensor) are not reused.
        quant = onnx_cache_path(self.cache_dir, self.model_key, input_size, self.opset, "int8pc")
        if not quant.exists():
            try:
                atomic_write(quant, lambda tmp: _quantize_int8(fp32, tmp))
            except OSError as exc:
                raise ModelLoadError(f"cannot write the ONNX graph cache {quant}: {exc}; set VPR_ROS_CACHE "
                                     "to a writable directory with free space") from exc
        return quant

    def _open(self, path: Path) -> object:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # Spinning threads would burn the cores a SLAM tracker beside us needs.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = ["CPUExecutionProvider"]
        if self.device == "cuda":
            providers.insert(0, "CUDAExecutionProvider")
        return ort.InferenceSession(str(path), opts, providers=providers)

    def _session(self, input_size: tuple[int, int]) -> object:
        if input_size not in self._sessions:
            path = self.graph_path(input_size)
            try:
                session = self._open(path)
            except Exception as exc:  # noqa: BLE001 - ORT's error classes share no base but Exception
                # The file is our own cache (a disk fault, a crash of an older version, a hand edit):
                # rebuild it once from the module, which is the source of truth.
                log.warning("cached ONNX graph %s cannot be opened (%s); re-exporting it", path,
                            str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
                for stale in {path, onnx_cache_path(self.cache_dir, self.model_key, input_size, self.opset,
                                                    "fp32")}:
                    try:
                        stale.unlink(missing_ok=True)
                    except OSError as unlink_exc:
                        raise ModelLoadError(f"cached ONNX graph {stale} is damaged and cannot be removed "
                                             f"({unlink_exc}); delete it by hand or set VPR_ROS_CACHE to a "
                                             "writable directory") from exc
                path = self.graph_path(input_size)
                try:
                    session = self._open(path)
                except Exception as exc2:  # noqa: BLE001 - as above
                    raise ModelLoadError(f"ONNX Runtime cannot open {path} even after re-exporting it: "
                                         f"{exc2}; use backend torch") from exc2
            self._sessions[input_size] = session
            self.paths[input_size] = path
        return self._sessions[input_size]

    def run(self, x: npt.NDArray[np.float32]) -> tuple[np.ndarray, np.ndarray | None]:
        """(N, 3, H, W) float32 -> (global (N, D), local (N, h, w, c) or None)."""
        session = self._session((int(x.shape[2]), int(x.shape[3])))
        outs = session.run(None, {"images": np.ascontiguousarray(x, dtype=np.float32)})
        return outs[0], (outs[1] if len(outs) > 1 else None)


def load_onnx_backend(module: torch.nn.Module, model_key: str, input_size: tuple[int, int],
                      device: str, precision: str, threads: int, cache_dir: Path) -> OrtRunner:
    """Build the ONNX Runtime runner and open the session for ``input_size`` now, so export or
    provider problems surface at load time rather than on the first frame.

    Raises:
        ConfigError: unsupported precision. ModelLoadError: CUDA provider missing, export failure.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"onnxruntime backend supports precision {', '.join(PRECISIONS)}, "
                          f"not {precision!r}; use backend torch for bf16/fp16")
    if device == "cuda":
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ModelLoadError("model.device=cuda but this onnxruntime has no CUDAExecutionProvider; "
                                 "install onnxruntime-gpu or set model.device=cpu")
    elif device != "cpu":
        raise ConfigError(f"model.device={device!r}; choose one of cpu, cuda")
    runner = OrtRunner(module, model_key, device, precision, threads, cache_dir)
    runner._session(tuple(input_size))
    return runner
