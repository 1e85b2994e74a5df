"""Configuration of the loop-closure pipeline.

The frozen dataclasses below are the single source of defaults. The ROS node declares its
parameters from them (``vpr_ros.nodes.params``) and ``config/loop_closure.yaml`` is loaded by
:func:`load_config`, so YAML, ROS parameters and Python defaults cannot drift apart.

Parameter names are dotted and mirror the nesting: ``detector.min_loop_gap_sec``,
``verify.min_matches``. Units are in the names (``_sec``, ``_m``, ``_deg``).
"""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path
from typing import Any, Collection, Mapping

import yaml

from vpr_ros.core.config.checks import (BACKENDS, DEVICES, LOCAL_ENCODINGS, MAX_COUNT, MAX_METRES,  # noqa: F401
                                        MAX_SEC, METRICS, PRECISIONS)
from vpr_ros.core.config.checks import (check_choice as _check_choice, check_fields as _check_fields,
                                        check_range as _check_range, meta as _meta)
from vpr_ros.core.config.geometry import GeometryConfig, OdometryGateConfig
from vpr_ros.core.config.pose_graph import PoseGraphConfig
from vpr_ros.core.config.relocalization import FramesConfig, RelocalizationConfig
from vpr_ros.core.config.text import TextConfig
from vpr_ros.core.config.verify import VerifyConfig
from vpr_ros.core.errors import ConfigError

__all__ = [
    "ModelConfig",
    "KeyframeConfig",
    "IndexConfig",
    "VerifyConfig",
    "DetectorConfig",
    "MapConfig",
    "GeometryConfig",
    "OdometryGateConfig",
    "TextConfig",
    "Config",
    "load_config",
    "config_from_flat",
    "config_to_flat",
    "flat_field_specs",
    "FieldSpec",
    "check_value",
    "flatten_parameters",
]



@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Which descriptor model runs and how."""

    preset: str = dataclasses.field(default="lite0-gem", metadata=_meta(
        "Descriptor preset from the model registry (vpr-ros models lists them)."))
    weights: str = dataclasses.field(default="", metadata=_meta(
        "Local weights file; empty uses the preset's packaged or cached weights."))
    backend: str = dataclasses.field(default="onnxruntime", metadata=_meta(
        "Inference backend.", choices=BACKENDS))
    device: str = dataclasses.field(default="cpu", metadata=_meta(
        "Inference device.", choices=DEVICES))
    precision: str = dataclasses.field(default="fp32", metadata=_meta(
        "Numeric precision: torch on CPU fp32 or bf16 (fastest at cos >= 0.9999 on AVX512-BF16 CPUs), "
        "onnxruntime fp32 or int8 (opt-in: check recall), CUDA fp16.", choices=PRECISIONS))
    threads: int = dataclasses.field(default=1, metadata=_meta(
        "CPU threads for inference; keep 1-2 beside a SLAM tracker.", lo=1, hi=256))
    keep_aspect: bool = dataclasses.field(default=False, metadata=_meta(
        "Keep the camera's aspect ratio (short side to the preset's input size, sides rounded to the "
        "patch multiple) instead of the official square resize; for non-square cameras."))

    def __post_init__(self) -> None:
        _check_fields(self, "model")
        if not self.preset:
            raise ConfigError("model.preset is empty; name a preset such as 'lite0-gem'")


@dataclasses.dataclass(frozen=True)
class KeyframeConfig:
    """When a camera frame becomes a keyframe (all enabled conditions must hold)."""

    min_gap_sec: float = dataclasses.field(default=0.0, metadata=_meta(
        "Minimum time since the last keyframe, seconds.", lo=0.0, hi=MAX_SEC))
    min_translation_m: float = dataclasses.field(default=0.5, metadata=_meta(
        "Minimum travel since the last keyframe when odometry is given, metres (0 disables). The "
        "default stops a standing robot from adding keyframes; without odometry it has no effect.",
        lo=0.0, hi=MAX_METRES))
    min_rotation_deg: float = dataclasses.field(default=15.0, metadata=_meta(
        "Minimum rotation since the last keyframe when odometry is given, degrees (0 disables). "
        "Travel OR rotation suffices when both are set.", lo=0.0, hi=180.0))
    max_similarity: float = dataclasses.field(default=1.0, metadata=_meta(
        "Novelty gate: a frame whose global cosine similarity to the last keyframe exceeds this is "
        "skipped (1.0 disables).", lo=-1.0, hi=1.0))

    def __post_init__(self) -> None:
        _check_fields(self, "keyframes")


FIRST_PASSES = ("float", "hash")
#: index.hash_factory=auto switches from BFlat to BHNSW32 above this many keyframes: up to 1M, measured by
#: vpr-ros bench map --hash, BFlat's exact scan stays within ~25 ms and loads in 0.3 s, BHNSW32 takes minutes.
HASH_AUTO_SWITCH = 1_000_000


@dataclasses.dataclass(frozen=True)
class IndexConfig:
    """The FAISS keyframe index."""

    factory: str = dataclasses.field(default="auto", metadata=_meta(
        "FAISS index factory string, wrapped in IndexIDMap2 (e.g. Flat, HNSW32), or auto: exact Flat "
        "up to index.auto_switch_keyframes, HNSW32 above."))
    metric: str = dataclasses.field(default="inner_product", metadata=_meta(
        "Similarity metric; inner product on L2-normalised descriptors is cosine.", choices=METRICS))
    top_k: int = dataclasses.field(default=5, metadata=_meta(
        "Global candidates retrieved per query and re-ranked by verification.", lo=1, hi=1000))
    auto_switch_keyframes: int = dataclasses.field(default=4000, metadata=_meta(
        "With index.factory=auto: exact Flat up to this many keyframes, HNSW32 above (the crossover "
        "measured by vpr-ros bench map, docs/benchmarks.md).", lo=1, hi=MAX_COUNT))
    ef_search: int = dataclasses.field(default=128, metadata=_meta(
        "HNSW search depth (efSearch) for HNSW factories and factory=auto; higher is slower and "
        "closer to exact.", lo=1, hi=100000))
    first_pass: str = dataclasses.field(default="float", metadata=_meta(
        "What retrieval searches first: float (the float index, index.factory) or hash (the binary hash of a "
        "SelaVPR++ -rerank model: Hamming top index.hash_candidates, re-ordered by float L2 distance, then "
        "index.top_k; the official search, core/hash_index.py).", choices=FIRST_PASSES))
    hash_candidates: int = dataclasses.field(default=100, metadata=_meta(
        "With index.first_pass=hash: keyframes taken by Hamming distance and re-ordered by the float descriptors "
        "(official: 100).", lo=1, hi=10000))
    hash_factory: str = dataclasses.field(default="auto", metadata=_meta(
        "With index.first_pass=hash: FAISS binary index, BFlat (exact Hamming, the official order), BHNSW<M>, or "
        "auto: BFlat up to index.hash_auto_switch_keyframes, BHNSW32 above."))
    hash_auto_switch_keyframes: int = dataclasses.field(default=HASH_AUTO_SWITCH, metadata=_meta(
        "With index.hash_factory=auto: exact BFlat up to this many keyframes, BHNSW32 above (measured by vpr-ros "
        "bench map --hash, docs/benchmarks.md).", lo=1, hi=MAX_COUNT))

    def __post_init__(self) -> None:
        _check_fields(self, "index")
        if not self.factory.strip():
            raise ConfigError("index.factory is empty; use a FAISS factory string such as 'Flat'")
        if not re.fullmatch(r"auto|BFlat|BHNSW\d+", self.hash_factory.strip()):
            raise ConfigError(f"index.hash_factory={self.hash_factory!r} is not allowed; choose auto, BFlat or "
                              "BHNSW<M> (e.g. BHNSW32)")


@dataclasses.dataclass(frozen=True)
class DetectorConfig:
    """Identity of this stream and the temporal exclusion rule."""

    robot_id: str = dataclasses.field(default="robot", metadata=_meta(
        "Robot identifier written into every keyframe and loop closure."))
    session_id: str = dataclasses.field(default="session", metadata=_meta(
        "Mapping session identifier; keyframes of another session are never excluded."))
    map_frame: str = dataclasses.field(default="map", metadata=_meta(
        "The map frame: frame_id of global_pose and the parent of the map -> odom transform (a loaded map "
        "defines it, docs/relocalization.md)."))
    min_loop_gap_sec: float = dataclasses.field(default=20.0, metadata=_meta(
        "A keyframe never matches keyframes of its own robot and session newer than this, seconds "
        "(1e9, ~31 years, means never).", lo=0.0, hi=MAX_SEC))
    exclude_last_n: int = dataclasses.field(default=0, metadata=_meta(
        "Also exclude the last N keyframes of the own robot and session.", lo=0, hi=MAX_COUNT))

    def __post_init__(self) -> None:
        _check_fields(self, "detector")
        if not self.robot_id:
            raise ConfigError("detector.robot_id is empty; give the robot a name")


@dataclasses.dataclass(frozen=True)
class MapConfig:
    """Persistence of the keyframe map."""

    load_path: str = dataclasses.field(default="", metadata=_meta(
        "Map directory loaded at startup (empty: start with an empty map); several maps separated by "
        "commas, e.g. 'maps/mon,maps/tue'."))
    save_path: str = dataclasses.field(default="", metadata=_meta(
        "Map directory written on save_map and at shutdown (empty: do not save)."))
    store_local: bool = dataclasses.field(default=True, metadata=_meta(
        "Keep dense local features of keyframes (needed for MNN verification against the map)."))
    autosave_sec: float = dataclasses.field(default=60.0, metadata=_meta(
        "Node: save the map to map.save_path this often while it changes, seconds (0 disables), so a "
        "kill or an out-of-memory stop loses at most this much; failures are logged and counted.",
        lo=0.0, hi=MAX_SEC))
    memory_budget_mb: float = dataclasses.field(default=0.0, metadata=_meta(
        "Node: diagnostics warn when the keyframes' descriptors outgrow this many MB (0 disables); "
        "per keyframe lite0-gem keeps 0.18 MB, SelaVPR 1.91 MB (docs/ros2.md).", lo=0.0, hi=MAX_METRES))
    thumbnails: bool = dataclasses.field(default=True, metadata=_meta(
        "Store a small JPEG thumbnail of each keyframe in the map (about 5 kB at 160 px) for "
        "vpr-ros map report's loop gallery."))
    thumbnail_px: int = dataclasses.field(default=160, metadata=_meta(
        "Longest side of the keyframe thumbnails, pixels.", lo=16, hi=1024))
    append: bool = dataclasses.field(default=True, metadata=_meta(
        "Node: append every keyframe to map.save_path as it is made (a live map, docs/map_store.md: kill -9 "
        "loses at most the keyframe being written; save_map copies it); false: write whole snapshots on "
        "autosave and at shutdown."))
    local_encoding: str = dataclasses.field(default="float16", metadata=_meta(
        "Disk encoding of dense local features in a live map: float32, float16 or int8 (per-location scale; "
        "SelaVPR 0.48 MB per keyframe instead of 0.95 MB); read back as float32.", choices=LOCAL_ENCODINGS))

    def __post_init__(self) -> None:
        _check_fields(self, "map")
        if self.save_path and Path(self.save_path).name in ("", ".", ".."):
            raise ConfigError(f"map.save_path={self.save_path!r} names no directory of its own (a save "
                              "would replace the current directory or a parent); give e.g. 'maps/office'")

    @property
    def load_paths(self) -> tuple[str, ...]:
        """``load_path`` split at commas: the maps loaded at startup, in order (a string, not a
        list, so launch arguments and ``-p map.load_path:=...`` stay one plain value)."""
        return tuple(p.strip() for p in self.load_path.split(",") if p.strip())


@dataclasses.dataclass(frozen=True)
class Config:
    """The whole pipeline configuration."""

    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    keyframes: KeyframeConfig = dataclasses.field(default_factory=KeyframeConfig)
    index: IndexConfig = dataclasses.field(default_factory=IndexConfig)
    verify: VerifyConfig = dataclasses.field(default_factory=VerifyConfig)
    detector: DetectorConfig = dataclasses.field(default_factory=DetectorConfig)
    map: MapConfig = dataclasses.field(default_factory=MapConfig)
    geometry: GeometryConfig = dataclasses.field(default_factory=GeometryConfig)
    odometry_gate: OdometryGateConfig = dataclasses.field(default_factory=OdometryGateConfig)
    text: TextConfig = dataclasses.field(default_factory=TextConfig)
    frames: FramesConfig = dataclasses.field(default_factory=FramesConfig)
    relocalization: RelocalizationConfig = dataclasses.field(default_factory=RelocalizationConfig)
    pose_graph: PoseGraphConfig = dataclasses.field(default_factory=PoseGraphConfig)


@dataclasses.dataclass(frozen=True)
class FieldSpec:
    """One flat parameter: dotted name, Python type, default and documentation."""

    name: str
    type: type
    default: Any
    description: str
    min: float | None
    max: float | None
    choices: tuple[str, ...] | None


def flat_field_specs() -> list[FieldSpec]:
    """All parameters as dotted names, in declaration order (used by the node and the YAML test)."""
    specs = []
    hints = typing.get_type_hints(Config)
    for section in dataclasses.fields(Config):
        cls = hints[section.name]
        sub_hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            specs.append(FieldSpec(
                name=f"{section.name}.{f.name}", type=sub_hints[f.name], default=f.default,
                description=f.metadata.get("description", ""), min=f.metadata.get("min"),
                max=f.metadata.get("max"), choices=f.metadata.get("choices")))
    return specs


def check_value(spec: FieldSpec, value: Any) -> Any:
    """Type-check ``value`` for ``spec`` (ints are accepted for floats), then its range and choices.

    Raises :class:`ConfigError` naming the parameter. Used for parameters that are not dataclass
    fields (the node-only settings); dataclass fields are also checked in ``__post_init__``.
    """
    value = _coerce(spec, value)
    if spec.type in (int, float):
        _check_range(spec.name, value, spec.min, spec.max)
    if spec.choices:
        _check_choice(spec.name, value, spec.choices)
    return value


def _coerce(spec: FieldSpec, value: Any) -> Any:
    kind = spec.type
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{spec.name}={value!r} must be true or false")
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{spec.name}={value!r} must be an integer")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{spec.name}={value!r} must be a number")
        return float(value)
    if kind is str:
        if value is None:
            return ""
        if not isinstance(value, str):
            raise ConfigError(f"{spec.name}={value!r} must be a string")
        return value
    raise AssertionError(f"unsupported parameter type {kind}")  # pragma: no cover


def config_from_flat(values: Mapping[str, Any], base: Config | None = None) -> Config:
    """Build a :class:`Config` from dotted names (``{"index.top_k": 10}``) over ``base``.

    Raises :class:`ConfigError` naming the key for unknown keys, wrong types and bad values.
    """
    base = base or Config()
    specs = {s.name: s for s in flat_field_specs()}
    unknown = sorted(set(values) - set(specs))
    if unknown:
        raise ConfigError(
            f"unknown parameter(s) {', '.join(unknown)}; known parameters are: {', '.join(specs)}")
    sections: dict[str, dict[str, Any]] = {}
    for key, value in values.items():
        section, name = key.split(".", 1)
        sections.setdefault(section, {})[name] = _coerce(specs[key], value)
    replaced = {}
    for section, changes in sections.items():
        replaced[section] = dataclasses.replace(getattr(base, section), **changes)
    return dataclasses.replace(base, **replaced)


def config_to_flat(config: Config) -> dict[str, Any]:
    """The inverse of :func:`config_from_flat`."""
    return {s.name: getattr(getattr(config, s.name.split(".")[0]), s.name.split(".")[1])
            for s in flat_field_specs()}


def flatten_parameters(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested parameter mappings -> dotted names (``{"index": {"top_k": 5}}`` -> ``{"index.top_k": 5}``)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_parameters(value, name + "."))
        else:
            flat[name] = value
    return flat


def load_config(path: str | Path, node_name: str = "loop_closure_node",
                overrides: Mapping[str, Any] | None = None,
                skip_keys: Collection[str] = ()) -> Config:
    """Load a ROS 2 parameter file (``/**: ros__parameters: ...``) into a :class:`Config`.

    Nested mappings and dotted keys are both accepted. Parameters under ``/**`` and under
    ``node_name`` (with or without a leading slash) are merged, the node's own section winning.
    ``overrides`` (dotted names) are applied last. ``skip_keys`` are parameters of the file that
    are not core configuration (the node-only settings, ``vpr_ros.nodes.settings``); any other
    unknown key is an error.
    """
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}; check the path") from exc
    except UnicodeDecodeError:
        # a binary file (a map, a checkpoint) given by mistake
        raise ConfigError(f"config file {path} is not text (not UTF-8); give a ROS 2 parameter YAML "
                          "like config/loop_closure.yaml") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    except RecursionError:
        raise ConfigError(f"config file {path} nests too deeply to be a parameter file") from None
    if not isinstance(document, Mapping):
        raise ConfigError(f"config file {path} must hold a mapping like '/**: ros__parameters: ...'")
    flat: dict[str, Any] = {}
    matched = False
    for section in ("/**", node_name, "/" + node_name.lstrip("/")):
        body = document.get(section)
        if body is None:
            continue
        if not isinstance(body, Mapping) or "ros__parameters" not in body:
            raise ConfigError(f"config file {path}: section {section!r} has no 'ros__parameters' mapping")
        flat.update(flatten_parameters(body["ros__parameters"] or {}))
        matched = True
    if not matched:
        raise ConfigError(
            f"config file {path} has no '/**' or '{node_name}' section; wrap parameters in "
            "'/**: ros__parameters:'")
    flat.update(overrides or {})
    flat = {k: v for k, v in flat.items() if k not in skip_keys}
    try:
        return config_from_flat(flat)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
