import dataclasses
from pathlib import Path

import pytest
import yaml

from vpr_ros.core.config import (Config, config_from_flat, config_to_flat, flat_field_specs, flatten_parameters,
                                 load_config)
from vpr_ros.core.errors import ConfigError
from vpr_ros.nodes.settings import all_parameter_specs, node_parameter_names

YAML = Path(__file__).resolve().parents[2] / "config" / "loop_closure.yaml"


def test_yaml_keys_and_defaults_equal_dataclasses():
    flat = flatten_parameters(yaml.safe_load(YAML.read_text())["/**"]["ros__parameters"])
    specs = {s.name: s for s in all_parameter_specs() if s.name != "extractor_factory"}
    assert set(flat) == set(specs)
    for name, value in flat.items():
        assert type(value) is specs[name].type or (specs[name].type is float and isinstance(value, float)), name
        assert value == specs[name].default, f"{name}: YAML {value!r} != dataclass {specs[name].default!r}"
    assert load_config(YAML, skip_keys=node_parameter_names()) == Config()
    with pytest.raises(ConfigError, match="unknown parameter.*queue.size"):
        load_config(YAML)


def test_every_field_documented():
    for spec in flat_field_specs():
        assert spec.description, spec.name


def test_flat_roundtrip():
    cfg = config_from_flat({"index.top_k": 9, "detector.robot_id": "r2", "verify.method": "global"})
    assert cfg.index.top_k == 9 and cfg.detector.robot_id == "r2"
    assert config_from_flat(config_to_flat(cfg)) == cfg


@pytest.mark.parametrize("key,value,message", [
    ("index.top_k", 0, "index.top_k=0 is below its minimum"),
    ("verify.method", "orb", "verify.method='orb' is not allowed; choose one of mnn, mnn\\+fundamental, global"),
    ("model.backend", "tflite", "model.backend='tflite'"),
    ("keyframes.max_similarity", 1.5, "keyframes.max_similarity=1.5 is above its maximum"),
    ("index.top_k", "5", "index.top_k='5' must be an integer"),
    ("detector.min_loop_gap_sec", float("nan"), "detector.min_loop_gap_sec is NaN"),
    ("map.store_local", 1, "must be true or false"),
])
def test_bad_values_name_the_key(key, value, message):
    with pytest.raises(ConfigError, match=message):
        config_from_flat({key: value})


def test_unknown_key_lists_known():
    with pytest.raises(ConfigError, match="unknown parameter.*index.topk.*index.top_k"):
        config_from_flat({"index.topk": 3})


def test_load_config_merges_node_section_and_dotted_keys(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("/**:\n  ros__parameters:\n    index: {top_k: 7}\n    detector.robot_id: a\n"
                 "my_node:\n  ros__parameters:\n    detector.robot_id: b\n")
    cfg = load_config(p, node_name="my_node")
    assert cfg.index.top_k == 7 and cfg.detector.robot_id == "b"
    assert load_config(p, node_name="my_node", overrides={"index.top_k": 3}).index.top_k == 3


@pytest.mark.parametrize("text,message", [
    ("[1, 2]", "must hold a mapping"),
    ("foo:\n  ros__parameters: {}\n", "no '/\\*\\*'"),
    ("/**:\n  index: {}\n", "no 'ros__parameters'"),
    ("/**:\n  ros__parameters:\n    index: {top_k: -1}\n", "c.yaml: index.top_k=-1"),
    ("/**: [", "not valid YAML"),
])
def test_bad_files(tmp_path, text, message):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(p)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config().index.top_k = 3
