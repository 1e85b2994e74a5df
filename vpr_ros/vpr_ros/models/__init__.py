"""Descriptor models: the preset registry, weight sources, preprocessing and inference backends.

``load_model`` and ``VprModel`` are resolved lazily so that ``import vpr_ros.models.registry``
(listing presets, validating config) does not pay for importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vpr_ros.models.model import VprModel, load_model, load_model_from_config

__all__ = ["load_model", "load_model_from_config", "VprModel"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from vpr_ros.models import model

        return getattr(model, name)
    raise AttributeError(f"module 'vpr_ros.models' has no attribute {name!r}")
