"""Configuration of the loop-closure pipeline: frozen dataclasses that are the single source of
defaults (``schema``: the ``Config`` tree, flat dotted parameter names, YAML loading), with the
sections of verification (``verify``), the geometry step (``geometry``) and text (``text``) and the
shared checks (``checks``). Imports only core.errors; everything else in vpr_ros may import it.
"""

from vpr_ros.core.config.checks import (BACKENDS, DEVICES, LOCAL_ENCODINGS, MAX_COUNT, MAX_METRES, MAX_SEC,
                                        METRICS, MNN_SCREENS, PRECISIONS, VERIFY_METHODS)
from vpr_ros.core.config.geometry import GeometryConfig, OdometryGateConfig
from vpr_ros.core.config.schema import (Config, DetectorConfig, FieldSpec, IndexConfig, KeyframeConfig, MapConfig,
                                        ModelConfig, VerifyConfig, check_value, config_from_flat, config_to_flat,
                                        flat_field_specs, flatten_parameters, load_config)
from vpr_ros.core.config.pose_graph import PoseGraphConfig
from vpr_ros.core.config.relocalization import FramesConfig, RelocalizationConfig
from vpr_ros.core.config.text import TextConfig

__all__ = [
    "ModelConfig", "KeyframeConfig", "IndexConfig", "VerifyConfig", "DetectorConfig", "MapConfig",
    "GeometryConfig", "OdometryGateConfig", "TextConfig", "FramesConfig", "RelocalizationConfig", "PoseGraphConfig", "Config", "load_config", "config_from_flat",
    "config_to_flat", "flat_field_specs", "FieldSpec", "check_value", "flatten_parameters",
    "BACKENDS", "DEVICES", "LOCAL_ENCODINGS", "MAX_COUNT", "MAX_METRES", "MAX_SEC", "METRICS", "MNN_SCREENS",
    "PRECISIONS", "VERIFY_METHODS",
]
