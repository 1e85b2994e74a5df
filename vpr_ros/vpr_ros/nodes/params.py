"""The ONLY mapping between ROS 2 parameters and the core configuration.

Core parameters are declared from :func:`vpr_ros.core.config.flat_field_specs` (dotted names such as
``verify.min_matches``), with their descriptions, numeric ranges and allowed values, and validated
by :func:`vpr_ros.core.config.config_from_flat`, the same function the YAML loader and the CLI use.
Node-only parameters (image transport, QoS, queue, debug image, diagnostics) live in
:data:`NODE_PARAMETERS` and build a :class:`NodeSettings`.

Every core parameter is read-only: the detector, model and index are built once at startup, so a
change needs a restart. Only ``debug.image`` can be switched at run time.
"""

from __future__ import annotations

import difflib
import math
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import (InvalidParameterTypeException, InvalidParameterValueException,
                              ParameterUninitializedException)
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

from vpr_ros.core.config import Config, FieldSpec, config_from_flat, flat_field_specs
from vpr_ros.core.errors import ConfigError
from vpr_ros.nodes.settings import (MUTABLE_PARAMETERS, NODE_PARAMETERS, NodeSettings, all_parameter_specs,
                                    settings_from_flat)

__all__ = ["NodeSettings", "NODE_PARAMETERS", "MUTABLE_PARAMETERS", "all_parameter_specs",
           "declare_and_read", "settings_from_flat", "parameter_descriptor", "image_qos",
           "parameter_table_markdown"]

_INT_MAX = 2**31 - 1


def parameter_descriptor(spec: FieldSpec) -> ParameterDescriptor:
    """ROS descriptor of one parameter: description (+ allowed values), range, read-only flag."""
    description = spec.description
    if spec.choices:
        description += f" One of: {', '.join(spec.choices)}."
    descriptor = ParameterDescriptor(
        description=description, read_only=spec.name not in MUTABLE_PARAMETERS,
        additional_constraints=f"one of: {', '.join(spec.choices)}" if spec.choices else "")
    if spec.type is float and (spec.min is not None or spec.max is not None):
        descriptor.floating_point_range = [FloatingPointRange(
            from_value=-math.inf if spec.min is None else float(spec.min),
            to_value=math.inf if spec.max is None else float(spec.max), step=0.0)]
    elif spec.type is int and (spec.min is not None or spec.max is not None):
        descriptor.integer_range = [IntegerRange(
            from_value=-_INT_MAX if spec.min is None else int(spec.min),
            to_value=_INT_MAX if spec.max is None else int(spec.max), step=0)]
    return descriptor


def _declare(node: Node, spec: FieldSpec) -> Any:
    try:
        return node.declare_parameter(spec.name, spec.default, parameter_descriptor(spec)).value
    except InvalidParameterTypeException as exc:
        hint = " (write a decimal point, e.g. 1.0 instead of 1)" if spec.type is float else ""
        raise ConfigError(f"parameter {spec.name} must be of type {spec.type.__name__}{hint}: {exc}") from None
    except InvalidParameterValueException as exc:
        raise ConfigError(f"parameter {spec.name} is invalid: {exc}") from None
    except ParameterUninitializedException as exc:  # pragma: no cover - defaults are never None
        raise ConfigError(f"parameter {spec.name} has no value: {exc}") from None


def _check_unknown_overrides(node: Node, known: set[str]) -> None:
    # rclpy silently ignores overrides nobody declares, so a typo in the YAML would go unnoticed.
    # The overrides are only exposed through this attribute (stable from Humble to Jazzy).
    overrides = getattr(node, "_parameter_overrides", {}) or {}
    builtin = {"use_sim_time", "start_type_description_service"}
    unknown = sorted(name for name in overrides
                     if name not in known and name not in builtin and not name.startswith("qos_overrides."))
    if unknown:
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hints.append(f"{name} (did you mean {close[0]}?)" if close else name)
        raise ConfigError(f"unknown parameter(s): {', '.join(hints)}; see the parameter table in "
                          "docs/ros2.md or config/loop_closure.yaml")


def declare_and_read(node: Node) -> tuple[Config, NodeSettings]:
    """Declare every parameter on ``node`` and return the validated core config and node settings.

    Raises :class:`ConfigError` naming the parameter for a wrong type, an out-of-range or
    disallowed value, or an unknown parameter name given on the command line or in the YAML.
    """
    core = {spec.name: _declare(node, spec) for spec in flat_field_specs()}
    extra = {spec.name: _declare(node, spec) for spec in NODE_PARAMETERS}
    _check_unknown_overrides(node, set(core) | set(extra))
    return config_from_flat(core), settings_from_flat(extra)


def image_qos(settings: NodeSettings) -> QoSProfile:
    """QoS of the sensor subscriptions: sensor-data QoS with the configured reliability and depth."""
    reliability = (ReliabilityPolicy.RELIABLE if settings.qos_reliability == "reliable"
                   else ReliabilityPolicy.BEST_EFFORT)
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=settings.qos_depth,
                      reliability=reliability, durability=qos_profile_sensor_data.durability)


def parameter_table_markdown() -> str:
    """The parameter table of docs/ros2.md (``python -m vpr_ros.nodes.params`` prints it)."""
    rows = ["| Parameter | Type | Default | Range / values | Description |", "|---|---|---|---|---|"]
    for spec in all_parameter_specs():
        if spec.choices:
            allowed = ", ".join(f"`{c}`" for c in spec.choices)
        elif spec.min is not None or spec.max is not None:
            allowed = f"[{'-inf' if spec.min is None else spec.min}, {'inf' if spec.max is None else spec.max}]"
        else:
            allowed = ""
        default = f"`{spec.default!r}`" if spec.type is str else f"`{str(spec.default).lower() if spec.type is bool else spec.default}`"
        rows.append(f"| `{spec.name}` | {spec.type.__name__} | {default} | {allowed} | "
                    f"{spec.description.replace('|', '/')} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(parameter_table_markdown(), end="")
