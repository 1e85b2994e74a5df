"""Allowed values, ranges and field metadata shared by the configuration dataclasses.

Every numeric field has a finite minimum and maximum (a test runs each extreme through the
detector); the helpers raise ConfigError naming the key and the allowed values.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from vpr_ros.core.errors import ConfigError

BACKENDS = ("torch", "onnxruntime", "tensorrt")
DEVICES = ("cpu", "cuda")
PRECISIONS = ("fp32", "bf16", "fp16", "int8")
METRICS = ("inner_product",)
VERIFY_METHODS = ("mnn", "mnn+fundamental", "global")
MNN_SCREENS = ("auto", "fp32", "bf16")  # models/backends/mnn_screen.py
# Upper bounds of the numeric fields: every value up to them must run (a test feeds each extreme
# through the detector). 1e9 s is ~31 years, "never" for a time gap, yet finite: `.inf` overflowed
# the integer nanosecond arithmetic of every frame.
MAX_SEC = 1.0e9
MAX_METRES = 1.0e6
MAX_COUNT = 1_000_000
GEOMETRY_METHODS = ("auto", "off", "essential", "pnp")
KEYPOINT_TYPES = ("sift", "orb")
ON_INVALID = ("publish", "reject")
COVARIANCE_MODELS = ("calibrated", "iid")  # core/geometry/pose_covariance.py: PNP_MODEL, IID_MODEL
LOCAL_ENCODINGS = ("float32", "float16", "int8")  # core/map/local_segments.py


def check_choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name}={value!r} is not allowed; choose one of {', '.join(allowed)}")


def check_range(name: str, value: float, lo: float | None = None, hi: float | None = None) -> None:
    if isinstance(value, float) and math.isnan(value):
        raise ConfigError(f"{name} is NaN; give a number")
    if lo is not None and value < lo:
        raise ConfigError(f"{name}={value!r} is below its minimum {lo}; give a value >= {lo}")
    if hi is not None and value > hi:
        raise ConfigError(f"{name}={value!r} is above its maximum {hi}; give a value <= {hi}")


def meta(description: str, lo: float | None = None, hi: float | None = None,
         choices: tuple[str, ...] | None = None) -> dict[str, Any]:
    return {"description": description, "min": lo, "max": hi, "choices": choices}


def check_fields(config: Any, section: str) -> None:
    """Check every field of a config dataclass against its own metadata (``choices``, ``min``,
    ``max``), so each bound is written once, where the field is declared; raises ConfigError naming
    ``section.field``."""
    for f in dataclasses.fields(config):
        name, value = f"{section}.{f.name}", getattr(config, f.name)
        if f.metadata.get("choices"):
            check_choice(name, value, f.metadata["choices"])
        elif f.metadata.get("min") is not None or f.metadata.get("max") is not None:
            check_range(name, value, f.metadata.get("min"), f.metadata.get("max"))
