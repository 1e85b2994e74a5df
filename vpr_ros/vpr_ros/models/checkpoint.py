"""Read checkpoint files safely and load them strictly into our modules (every ``.pth``-based preset).

Accepted as published: a dict holding ``model_state_dict`` (the training scripts' format) or a bare state
dict; keys with or without the ``module.`` prefix that ``nn.DataParallel`` adds; SelaVPR's older
top-level ``upconv`` / ``upconv2`` names for the local head (renamed ``LocalAdapt.upconv1/2`` upstream).
Files are unpickled with ``weights_only=True`` (a crafted file is refused, never run), every failure is a
``ModelLoadError`` naming the file and what to do, and NaN/Inf weights are refused at load.
"""

from __future__ import annotations

import logging
import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vpr_ros.core.errors import ModelLoadError

__all__ = ["read_state_dict", "normalise_keys", "guess_preset", "load_into", "load_state_into", "require_finite",
           "MAX_LISTED"]

log = logging.getLogger(__name__)

#: How many offending keys an error message lists per category.
MAX_LISTED = 8

_LEGACY_PREFIXES = {"upconv.": "LocalAdapt.upconv1.", "upconv2.": "LocalAdapt.upconv2."}


def _numpy_safe_globals() -> list[object]:
    # Training checkpoints also pickle `recalls` (a float64 ndarray) and `best_r5` (a float64 scalar);
    # allowing exactly these numpy reconstructors keeps weights_only=True (no arbitrary code) working.
    # Files written under numpy 1.x name them numpy.core.*, under numpy 2.x numpy._core.*.
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray  # type: ignore[no-redef]

    out: list[object] = [np.ndarray, np.dtype, np.dtypes.Float64DType]
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        out.append((multiarray._reconstruct, f"{module}._reconstruct"))
        out.append((multiarray.scalar, f"{module}.scalar"))
    return out


def _first_line(exc: BaseException) -> str:
    lines = [ln for ln in str(exc).splitlines() if ln.strip()]
    return lines[-1].strip() if lines else type(exc).__name__


def _unsafe_global(exc: BaseException) -> str | None:
    # torch's text advises re-running with weights_only=False, which would execute whatever the file
    # holds; only the name of the refused object is passed on.
    found = re.search(r"GLOBAL ([\w.]+)", str(exc))
    return found[1] if found else None


def _head(path: Path, n: int = 64) -> bytes | None:
    try:
        with open(path, "rb") as fh:
            return fh.read(n)
    except OSError:
        return None


def _not_a_checkpoint(path: Path) -> str:
    head = _head(path)
    if head is None:
        return "it cannot be read"
    head = head.lstrip()
    if not head:
        return "the file is empty"
    if head[:1] == b"<":
        return "it is a web page (HTML), not the checkpoint; a download was probably refused"
    return "it is not a PyTorch file, or a truncated/damaged one"


def require_finite(state: Mapping[str, torch.Tensor], source: str | Path) -> None:
    """Refuse a state dict with NaN/Inf in any floating tensor, naming the first bad one.

    A diverged or damaged checkpoint would otherwise load and give NaN descriptors (or an error) only
    at the first frame, long after start-up succeeded.

    Raises:
        ModelLoadError: naming ``source``, the first non-finite tensor and its NaN/Inf counts.
    """
    for key, value in state.items():
        if not isinstance(value, torch.Tensor) or not value.is_floating_point() or value.numel() == 0:
            continue
        # One reduction pass (min/max propagate NaN, and show +-Inf) instead of an isfinite mask: ~4x
        # faster, 0.6 s rather than 4 s over SelaVPR's 300M weights on this CPU.
        lo, hi = torch.aminmax(value)
        if not (bool(torch.isfinite(lo)) and bool(torch.isfinite(hi))):
            n_nan = int(torch.isnan(value).sum())
            n_inf = int(torch.isinf(value).sum())
            raise ModelLoadError(
                f"checkpoint {source}: tensor {key!r} ({_shape(value)}) holds {n_nan} NaN and {n_inf} Inf "
                "values; the file is damaged or from a diverged training run: use another checkpoint "
                "or re-download it")


def read_state_dict(path: str | Path, what: str = "an official SelaVPR/CricaVPR file") -> dict[str, torch.Tensor]:
    """Read a checkpoint file into a state dict with our key names (CPU tensors, all finite).

    Only tensors, containers and numpy arrays are unpickled (``weights_only=True``): a file carrying any
    other Python object is refused without running it.

    Args:
        what: what the file should be, for error messages.
    Raises:
        ModelLoadError: missing/unreadable file, a file that needs unsafe unpickling, no tensors, or a
            NaN/Inf tensor.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise ModelLoadError(f"checkpoint {path} is a directory, not a file; point model.weights at the "
                             f"checkpoint file ({what}) inside it")
    if not path.is_file():
        raise ModelLoadError(f"checkpoint {path} does not exist; download it with `vpr-ros weights download`"
                             " or point model.weights at the file")
    if is_safetensors(path):
        state = normalise_keys(read_safetensors(path))
        require_finite(state, path)  # refused at load, like the PyTorch files below
        return state
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - damaged bytes reach torch's unpickler, which can raise
        # almost any built-in error (IndexError, KeyError, struct.error, ...); weights_only=True means
        # nothing in the file ran, so each case is a clear "cannot read" rather than a traceback.
        name = _unsafe_global(exc) if isinstance(exc, pickle.UnpicklingError) else None
        if name is not None:
            raise ModelLoadError(f"refused checkpoint {path}: it references the Python object {name}, and "
                                 "only tensors are read (weights_only=True; nothing was executed); it is "
                                 f"not {what}: use the published file") from exc
        opcode = re.search(r"Unsupported operand (\d+)", str(exc))
        if isinstance(exc, pickle.UnpicklingError) and opcode and (_head(path, 2) == b"PK"):
            # A valid zip whose pickle uses opcodes the safe reader refuses (protocol > 2 or crafted).
            raise ModelLoadError(f"refused checkpoint {path}: its pickle uses opcode {opcode[1]}, which the "
                                 "tensor-only reader (weights_only=True; nothing was executed) does not "
                                 f"accept; it is not {what}: use the published file, or re-save a trusted "
                                 "one with torch.save's default pickle protocol") from exc
        reason = _not_a_checkpoint(path)
        raise ModelLoadError(f"cannot read checkpoint {path}: {reason} ({type(exc).__name__}); it should "
                             f"be {what}: re-download or restore the file") from exc
    if isinstance(obj, Mapping) and "model_state_dict" in obj:
        obj = obj["model_state_dict"]
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelLoadError(f"checkpoint {path} holds no state dict (expected a dict of tensors or "
                             f"a dict with 'model_state_dict'); it is not {what}")
    state = normalise_keys(obj)
    require_finite(state, path)
    return state


def normalise_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip ``module.`` prefixes and map SelaVPR's legacy local-head names to ``LocalAdapt.*``."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        while key.startswith("module."):
            key = key[len("module."):]
        for old, new in _LEGACY_PREFIXES.items():
            if key.startswith(old):
                key = new + key[len(old):]
        out[key] = value
    return _megaloc_v1_keys(out)


def _megaloc_v1_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # MegaLoc's first release (megaloc.torch) wrapped the torch.hub ViT: ``backbone.model.*`` plus the
    # unused ``mask_token``. The current file (and our module) has ``backbone.*`` and no mask token.
    # Only a file with MegaLoc's linear layer is renamed, so a SALAD file still reads as SALAD.
    if "aggregator.linear.weight" not in state or "backbone.model.cls_token" not in state:
        return state
    prefix = "backbone.model."
    return {("backbone." + k[len(prefix):] if k.startswith(prefix) else k): v
            for k, v in state.items() if k != prefix + "mask_token"}


_SAFETENSORS_MAX_HEADER = 100 << 20


def is_safetensors(path: Path) -> bool:
    """True when ``path`` starts like a safetensors file (u64 little-endian header length, then ``{``)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(9)
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < _SAFETENSORS_MAX_HEADER


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file (MegaLoc's ``model.safetensors``), read without unpickling anything.

    Raises:
        ModelLoadError: the ``safetensors`` package is missing or the file is damaged.
    """
    try:
        from safetensors import SafetensorError
        from safetensors.torch import load_file
    except ImportError as exc:
        raise ModelLoadError(f"{path} is a safetensors file but the safetensors package is missing ({exc}); "
                             "run `pip install safetensors` (pinned in requirements/base.txt)") from exc
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read safetensors file {path}: {_first_line(exc)}; download it again "
                             "(`vpr-ros weights download megaloc`)") from exc
    if not state:
        raise ModelLoadError(f"safetensors file {path} holds no tensors; download it again")
    return state


def guess_preset(state: Mapping[str, torch.Tensor]) -> str | None:
    """Which preset a (normalised) state dict looks like, from its distinctive keys and widths."""
    transport = _guess_transport_preset(state)
    if transport is not None:
        return transport
    successor = _guess_successor_preset(state)
    if successor is not None:
        return successor
    if "encoder.layers.0.self_attn.in_proj_weight" in state:
        return "cricavpr"
    if "LocalAdapt.upconv1.weight" in state:
        return "selavpr-reg4" if "backbone.register_tokens" in state else "selavpr"
    if "_conv_stem.weight" in state:
        return "lite0-gem"
    if "blocks.0.attn.qkv.weight" in state or "backbone.blocks.0.attn.qkv.weight" in state:
        return "none (a plain DINOv2 backbone, not a SelaVPR/CricaVPR model)"
    return None


def _guess_transport_preset(state: Mapping[str, torch.Tensor]) -> str | None:
    """SALAD, MegaLoc (either layout) and BoQ, told apart by their aggregator keys."""
    if "aggregator.linear.weight" in state and "aggregator.agg.dust_bin" in state:
        return "megaloc"
    if "aggregator.dust_bin" in state:
        return "salad"
    if "aggregator.boqs.0.queries" in state:
        return "boq"
    return None


def _guess_successor_preset(state: Mapping[str, torch.Tensor]) -> str | None:
    """SelaVPR++ (side-stream adapters; ViT-L or ViT-B by width; ``-rerank`` with the hash head) and ImAge."""
    if "learnable_aggregation_tokens" in state:
        return "image or image-gsv"
    norm = state.get("backbone.norm.weight")
    if "backbone.adapters.0.D_fc1.weight" not in state or norm is None:
        return None
    name = "selavprpp" if norm.shape[0] == 1024 else "selavprpp-base"
    return name + "-rerank" if "linear4.weight" in state else name


def _shape(t: torch.Tensor) -> str:
    return "x".join(map(str, t.shape)) or "scalar"


def load_into(module: nn.Module, path: str | Path) -> None:
    """Read ``path`` and load it into ``module`` with ``strict=True`` semantics.

    Raises:
        ModelLoadError: listing the first missing, unexpected and mis-shaped keys, and which preset
            the file would fit.
    """
    load_state_into(module, read_state_dict(path), path)


def load_state_into(module: nn.Module, state: Mapping[str, torch.Tensor], path: str | Path) -> None:
    """Load an already read (normalised) ``state`` into ``module`` strictly; ``path`` is for messages.

    Raises:
        ModelLoadError: listing the first missing, unexpected and mis-shaped keys, and which preset
            the file would fit.
    """
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshaped = [f"{k} (file {_shape(state[k])}, model {_shape(expected[k])})"
                 for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or misshaped:
        found = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
            if keys:
                more = f" (+{len(keys) - MAX_LISTED} more)" if len(keys) > MAX_LISTED else ""
                found.append(f"{len(keys)} {label}: {', '.join(keys[:MAX_LISTED])}{more}")
        fits = guess_preset(state)
        parts = [f"checkpoint {path} does not fit {type(module).__name__} ({'; '.join(found)})",
                 f"the file looks like preset: {fits}" if fits else "the file matches no known preset",
                 "choose the matching preset (model.preset) and do not shrink it with overrides"]
        raise ModelLoadError("; ".join(parts))
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # e.g. a dtype that cannot be copied into the parameter
        raise ModelLoadError(f"checkpoint {path} does not load into {type(module).__name__}: "
                             f"{_first_line(exc)}") from exc
    log.info("loaded %d tensors from %s into %s", len(state), path, type(module).__name__)
