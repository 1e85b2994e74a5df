"""Building an official preset's module and loading its authors' checkpoint into it, one way for all.

Each preset module (cricavpr, salad, megaloc, boq) keeps its ``build_<preset>`` and ``load_weights``
as its public API; both come down to the two functions here: overrides checked against the preset's
config dataclass (small random-init test models), the official file loaded strictly by
``checkpoint.load_into`` (which names the preset a mismatched file fits).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, TypeVar

from torch import nn

from vpr_ros.core.errors import ConfigError, ModelLoadError

__all__ = ["check_overrides", "build_official", "load_official"]

M = TypeVar("M", bound=nn.Module)


def check_overrides(name: str, overrides: dict[str, object], config: type) -> None:
    """Raise ConfigError naming the allowed overrides when ``overrides`` has an unknown key."""
    allowed = {f.name for f in dataclasses.fields(config)}
    unknown = sorted(set(overrides) - allowed)
    if unknown:
        raise ConfigError(f"unknown {name} override(s) {unknown}; allowed: {sorted(allowed)}")


def load_official(module: nn.Module, model_cls: type[nn.Module], path: str | Path) -> None:
    """Load an official checkpoint into ``module`` (a ``model_cls``) strictly; ModelLoadError otherwise."""
    if not isinstance(module, model_cls):
        raise ModelLoadError(f"{model_cls.__name__} weights need a {model_cls.__name__} module, "
                             f"got {type(module).__name__}")
    from vpr_ros.models.checkpoint import load_into

    load_into(module, path)


def build_official(name: str, model_cls: Callable[..., M], config_cls: type, weights_key: str,
                   pretrained: bool, overrides: dict[str, object]) -> M:
    """``model_cls(config_cls(**overrides))`` in eval mode; ``pretrained`` loads the cached official
    file ``weights_key`` (models/weights.py)."""
    check_overrides(name, overrides, config_cls)
    model = model_cls(config_cls(**overrides))
    if pretrained:
        from vpr_ros.models.weights import require_cached_weights

        load_official(model, model_cls, require_cached_weights(weights_key))  # type: ignore[arg-type]
    return model.eval()
