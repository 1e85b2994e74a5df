"""relocalization.launch.py: its pure logic (vpr_ros.launch_relocalization) and the launch file that
calls it (checked with ast: launch/launch_ros are not installable here). The node test
(test_relocalization_node.py) starts the real node with exactly what the nav2 preset returns."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from vpr_ros.core.config import flat_field_specs
from vpr_ros.launch_args import LAUNCH_ARGUMENTS, to_ros_args
from vpr_ros.launch_relocalization import (RELOCALIZATION_ARGUMENTS, SHARED_ARGUMENTS, TARGETS,
                                           relocalization_launch_config)

LAUNCH_FILE = Path(__file__).resolve().parents[2] / "launch" / "relocalization.launch.py"
MAP = {"map_load": "/maps/office"}
#: What each consumer takes (docs/relocalization.md, ../shared/research/RELOCALIZATION.md).
EXPECTED = {
    "nav2": {"global_pose": "initialpose"},
    "slam_toolbox": {"global_pose": "initialpose"},
    "rtabmap": {"global_pose": "rtabmap/initialpose"},
    "cuvslam": {"global_pose": "visual_slam/initial_pose", "relocalize_trigger": "visual_slam/trigger_hint"},
    "robot_localization": {"global_pose": "set_pose"},
    "none": {},
}


def _ours(cfg) -> dict[str, str]:
    return {s: t for s, t in cfg.remappings if s in ("global_pose", "relocalize_trigger")}


@pytest.mark.parametrize("target", sorted(EXPECTED))
def test_each_target_remaps_the_pose_and_trigger_to_what_its_consumer_takes(target):
    cfg = relocalization_launch_config({**MAP, "target": target})
    assert _ours(cfg) == EXPECTED[target]
    assert cfg.overrides["map.load_path"] == "/maps/office" and "map.save_path" not in cfg.overrides
    assert dict(cfg.remappings)["image"] == "image"  # the shared arguments work as in loop_closure.launch.py
    argv = to_ros_args(cfg)
    for source, dest in EXPECTED[target].items():
        assert f"{source}:={dest}" in argv


def test_rtabmap_prior_and_explicit_topics():
    cfg = relocalization_launch_config({**MAP, "target": "rtabmap", "rtabmap_input": "global_pose"})
    assert _ours(cfg) == {"global_pose": "rtabmap/global_pose"}
    cfg = relocalization_launch_config({**MAP, "target": "robot_localization", "pose_topic": "ekf/pose0",
                                        "trigger_topic": "/ask"})
    assert _ours(cfg) == {"global_pose": "ekf/pose0", "relocalize_trigger": "/ask"}


def test_mode_and_publish_tf_set_the_core_parameters_and_empty_keeps_the_config_files():
    cfg = relocalization_launch_config({**MAP, "mode": "continuous", "publish_tf": "true"})
    assert cfg.overrides["relocalization.mode"] == "continuous" and cfg.overrides["relocalization.publish_tf"] is True
    plain = relocalization_launch_config(MAP)
    assert "relocalization.mode" not in plain.overrides and "relocalization.publish_tf" not in plain.overrides
    core = {s.name for s in flat_field_specs()}
    assert {"relocalization.mode", "relocalization.publish_tf", "map.load_path"} <= core


@pytest.mark.parametrize("args, word", [
    ({}, "map_load"), ({**MAP, "target": "amcl"}, "target"), ({**MAP, "mode": "always"}, "mode"),
    ({**MAP, "publish_tf": "maybe"}, "publish_tf"), ({**MAP, "rtabmap_input": "prior"}, "rtabmap_input"),
    ({**MAP, "map_save": "/m"}, "map_save"), ({**MAP, "target": "nav2", "publish_tf": "true"}, "two parents"),
])
def test_bad_arguments_are_refused_by_name(args, word):
    with pytest.raises(ValueError, match=word):
        relocalization_launch_config(args)


def test_publish_tf_only_where_no_consumer_owns_map_to_odom():
    assert [n for n, t in TARGETS.items() if not t.owns_map_to_odom] == ["none"]
    assert relocalization_launch_config({**MAP, "target": "none", "publish_tf": "on"}).overrides[
        "relocalization.publish_tf"] is True


def test_launch_file_declares_exactly_the_accepted_arguments_and_calls_the_function():
    source = LAUNCH_FILE.read_text()
    tree = ast.parse(source, filename=str(LAUNCH_FILE))
    declared = {n.args[0].value for n in ast.walk(tree) if isinstance(n, ast.Call)
                and getattr(n.func, "id", "") == "_declare" and n.args and isinstance(n.args[0], ast.Constant)}
    assert declared == set(SHARED_ARGUMENTS) | set(RELOCALIZATION_ARGUMENTS)
    assert "relocalization_launch_config(values)" in source and "OpaqueFunction(function=_nodes)" in source
    assert "def generate_launch_description" in source
    for name, (_, description) in {**LAUNCH_ARGUMENTS, **RELOCALIZATION_ARGUMENTS}.items():
        assert len(description) > 30, f"launch argument {name} needs a real description"
