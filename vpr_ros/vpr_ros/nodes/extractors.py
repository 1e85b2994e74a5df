"""Where the node's descriptor model comes from: ``model.preset`` or an injected 'module:function'."""

from __future__ import annotations

import importlib
from typing import Callable

from vpr_ros.core.config import Config
from vpr_ros.core.detector import Extractor
from vpr_ros.core.errors import ModelLoadError, VprError

__all__ = ["ExtractorFactory", "load_extractor_factory", "default_extractor"]

ExtractorFactory = Callable[[Config], Extractor]


def load_extractor_factory(spec: str) -> ExtractorFactory:
    """'module:function' -> the function (tests and benchmarks inject small models this way)."""
    module, _, name = spec.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise VprError(f"extractor_factory={spec!r} cannot be imported ({exc}); give 'module:function' "
                       "importable on PYTHONPATH") from None


def default_extractor(config: Config) -> Extractor:
    try:
        from vpr_ros.models import load_model_from_config  # torch/onnxruntime: only when a node starts
    except ImportError as exc:
        raise ModelLoadError(f"cannot import the model zoo ({exc}); reinstall vpr_ros with its "
                             "requirements") from None
    return load_model_from_config(config.model)
