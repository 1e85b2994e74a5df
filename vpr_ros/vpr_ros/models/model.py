"""``load_model``: preset name -> a ready :class:`VprModel` (weights resolved, backend chosen)."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import numpy.typing as npt
import torch

from vpr_ros.core.config import ModelConfig
from vpr_ros.core.errors import ConfigError, ModelLoadError
from vpr_ros.core.types import Descriptors
from vpr_ros.models.backends import Runner
from vpr_ros.models.cache import cache_dir
from vpr_ros.models.hash_code import hash_dim, run_with_hash
from vpr_ros.models.preprocess import preprocess_images
from vpr_ros.models.registry import PresetSpec, get_preset
from vpr_ros.models.weights_package import file_sha256, package_source_path

__all__ = ["VprModel", "load_model", "load_model_from_config", "resolve_weights"]

BACKENDS = ("torch", "onnxruntime", "tensorrt")
# Preprocessing options that load_model takes out of ``overrides`` (the rest go to the factory).
_PREPROCESS_KEYS = ("input_size", "keep_aspect")


class VprModel:
    """A descriptor model behind one backend; satisfies ``vpr_ros.core.detector.Extractor``.

    Attributes:
        spec: the preset (``input_size`` reflects any override).
        model_id: "<preset>@<sha256(weights)[:8]>" or "<preset>@random"; maps built with one
            model_id can only be searched with the same one.
        global_dim: D of the global descriptor.
        module: the torch module (its state_dict keys equal the official checkpoint's).
        backend: "torch", "onnxruntime" or "tensorrt".
        hash_bits: bits of the binary code ``extract`` returns in ``Descriptors.hash`` (0: none).
    """

    def __init__(self, spec: PresetSpec, model_id: str, module: torch.nn.Module, runner: Runner,
                 backend: str, keep_aspect: bool = False, batch_size: int = 16) -> None:
        self.spec = spec
        self.model_id = model_id
        self.module = module
        self.runner = runner
        self.backend = backend
        self.keep_aspect = keep_aspect
        self.batch_size = batch_size
        self.global_dim = spec.global_dim
        self.hash_bits = hash_dim(module)

    def preprocess(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """N frames (H, W, 3) uint8 RGB -> (N, 3, H', W') float32; raises InputError on bad frames."""
        return preprocess_images(images, self.spec.preprocess, self.spec.input_size,
                                 self.spec.patch_multiple, self.keep_aspect)

    def extract(self, images: Sequence[np.ndarray]) -> Descriptors:
        """Describe N frames.

        Returns:
            Descriptors with global_ (N, D) float32 L2-normalised and local (N, h, w, c) float32
            L2-normalised per location, or None for models without a local head; hashing models
            (``hash_bits`` > 0) also fill ``hash`` (N, hash_bits / 8) uint8.
        """
        globals_: list[np.ndarray] = []
        locals_: list[np.ndarray] = []
        hashes: list[np.ndarray] = []
        for start in range(0, len(images) or 1, self.batch_size):
            x = self.preprocess(images[start:start + self.batch_size]).numpy()
            if self.hash_bits:
                g, loc, code = run_with_hash(self.runner, self.module, x)
                hashes.append(code)
            else:
                g, loc = self.runner.run(x)
            globals_.append(_renormalise(g))
            if loc is not None:
                locals_.append(_renormalise(loc))
        global_ = np.concatenate(globals_)
        if global_.shape[1] != self.global_dim:
            raise ModelLoadError(f"{self.model_id} produced {global_.shape[1]}-D descriptors but the "
                                 f"registry says {self.global_dim}; fix the preset entry")
        return Descriptors(global_=global_, local=np.concatenate(locals_) if locals_ else None,
                           hash=np.concatenate(hashes) if hashes else None)


def _renormalise(x: np.ndarray) -> npt.NDArray[np.float32]:
    # fp16/bf16/int8 backends return rows whose norm is only ~1; restore the contract in fp32.
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def resolve_weights(spec: PresetSpec) -> Path:
    """Default weights file of a preset (``package:`` or ``download:`` source).

    Raises:
        ModelLoadError: the source is unavailable, with the command that fixes it.
    """
    kind, _, name = spec.weights_source.partition(":")
    if kind == "package":
        return package_source_path(name)
    if kind == "download":
        hint = f"run `vpr-ros weights download {name}` or set model.weights to a local file"
        try:
            from vpr_ros.models.weights import cached_weights_path
        except ImportError as exc:
            raise ModelLoadError(
                f"weights {name!r} for {spec.name} are not available ({exc}); {hint}") from exc
        try:
            path = cached_weights_path(name)
        except (OSError, KeyError, ValueError) as exc:
            raise ModelLoadError(
                f"weights {name!r} for {spec.name} are not available ({exc}); {hint}") from exc
        if path is None or not Path(path).is_file():
            raise ModelLoadError(f"weights {name!r} for {spec.name} are not downloaded; {hint}")
        return Path(path)
    raise ModelLoadError(f"preset {spec.name} has no pretrained weights (source {spec.weights_source!r}); "
                         "pass weights=PATH or pretrained=False")


def _build_module(spec: PresetSpec, overrides: dict[str, Any]) -> tuple[torch.nn.Module, Any]:
    mod_name, _, fn_name = spec.factory.partition(":")
    try:
        factory_module = importlib.import_module(mod_name)
        factory = getattr(factory_module, fn_name)
    except (ImportError, AttributeError) as exc:
        raise ModelLoadError(f"cannot import factory {spec.factory} of preset {spec.name}: {exc}") from exc
    try:
        module = factory(pretrained=False, **overrides)
    except TypeError as exc:
        raise ConfigError(f"bad override for preset {spec.name}: {exc}") from exc
    return module, factory_module


def _load_weights(factory_module: Any, module: torch.nn.Module, path: Path) -> None:
    hook = getattr(factory_module, "load_weights", None)
    if hook is not None:
        hook(module, path)
        return
    # Presets without their own loader read files like the official ones: tensors only, all finite.
    from vpr_ros.models.checkpoint import load_into

    load_into(module, path)


def _state_digest(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def load_model(preset: str, weights: str | None = None, *, backend: str = "torch", device: str = "cpu",
               precision: str = "fp32", threads: int = 1, pretrained: bool = True,
               **overrides: Any) -> VprModel:
    """Build a preset, load its weights and put it behind a backend.

    Args:
        preset: registry name (``vpr_ros.models.registry.preset_names()``).
        weights: local checkpoint; None uses the preset's default source when ``pretrained``.
        backend: "torch", "onnxruntime" or "tensorrt".
        device: "cpu" or "cuda". precision: "fp32", "bf16", "fp16" or "int8" (backend-dependent).
        threads: CPU inference threads.
        pretrained: False builds a random-init model (tests); ``weights`` must then be None.
        overrides: ``input_size`` (H, W) and ``keep_aspect`` change preprocessing; the rest go to the
            preset factory (e.g. smaller depths for tests).
    Raises:
        ConfigError: unknown preset/backend/precision or bad override.
        ModelLoadError: weights, factory, device or backend unavailable.
    """
    spec = get_preset(preset)
    if backend not in BACKENDS:
        raise ConfigError(f"model.backend={backend!r}; choose one of {', '.join(BACKENDS)}")
    if threads < 1:
        raise ConfigError(f"model.threads={threads}; give at least 1")
    prep = {k: overrides.pop(k) for k in _PREPROCESS_KEYS if k in overrides}
    if "input_size" in prep:
        spec = dataclasses.replace(spec, input_size=tuple(int(s) for s in prep["input_size"]))
    if spec.square_only and (spec.input_size[0] != spec.input_size[1] or prep.get("keep_aspect")):
        raise ConfigError(f"preset {spec.name} takes square inputs only (its network reshapes the patches to a "
                          f"square grid); got input_size {spec.input_size[0]}x{spec.input_size[1]}, keep_aspect "
                          f"{bool(prep.get('keep_aspect'))}: use a square input_size and model.keep_aspect false")
    path: Path | None = None
    if weights is not None or pretrained:
        # Resolve before building, so a missing download fails fast and says how to fix it.
        path = Path(weights).expanduser() if weights is not None else resolve_weights(spec)
        if path.is_dir():
            raise ModelLoadError(f"weights {path} is a directory, not a checkpoint file; point "
                                 "model.weights at the file")
        if not path.is_file():
            what = "is not a regular file" if path.exists() else "does not exist"
            raise ModelLoadError(f"weights file {path} {what}; check model.weights")
    module, factory_module = _build_module(spec, overrides)
    dim = getattr(module, "global_dim", None)
    if isinstance(dim, int) and dim != spec.global_dim:
        # Overrides (e.g. a smaller head in tests) change D; report what the module really produces.
        spec = dataclasses.replace(spec, global_dim=dim, local_shape=None)
    if path is not None:
        _load_weights(factory_module, module, path)
        model_id = f"{spec.name}@{file_sha256(path)[:8]}"
        cache_key = model_id
    else:
        model_id = f"{spec.name}@random"
        cache_key = f"{model_id}-{_state_digest(module)[:8]}"
    if overrides:
        blob = json.dumps(overrides, sort_keys=True, default=str).encode()
        cache_key += "+" + hashlib.sha256(blob).hexdigest()[:8]
    module = module.float().eval()
    runner: Runner
    if backend == "torch":
        from vpr_ros.models.backends.torch_backend import load_torch_backend

        runner = load_torch_backend(module, device, precision, threads)
    elif backend == "onnxruntime":
        from vpr_ros.models.backends.onnx_backend import load_onnx_backend

        runner = load_onnx_backend(module, cache_key, spec.input_size, device, precision, threads,
                                   cache_dir("onnx"))
    else:
        try:
            from vpr_ros.models.backends.tensorrt_backend import load_tensorrt_backend
        except ImportError as exc:
            raise ModelLoadError(f"TensorRT backend unavailable ({exc}); install TensorRT or use "
                                 "backend onnxruntime") from exc
        # The TensorRT cache is keyed by what we pass as model_id: pass the full cache key.
        runner = load_tensorrt_backend(spec, module, cache_key, device, precision, cache_dir("tensorrt"))
    return VprModel(spec, model_id, module, runner, backend, keep_aspect=bool(prep.get("keep_aspect", False)))


def load_model_from_config(model: ModelConfig) -> VprModel:
    """The model named by a ``ModelConfig`` (the node, replay and demo all load it this way)."""
    return load_model(model.preset, model.weights or None, backend=model.backend, device=model.device,
                      precision=model.precision, threads=model.threads, keep_aspect=model.keep_aspect)
