"""The launch logic (a pure function) and the launch files that call it (checked with ast).

``launch``/``launch_ros`` are not installable here, so the launch files are parsed, not run; the
node tests start the real node with exactly what :func:`node_launch_config` returns.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from vpr_ros.core.config import flat_field_specs
from vpr_ros.nodes.settings import all_parameter_specs
from vpr_ros.launch_args import (LAUNCH_ARGUMENTS, MULTI_ROBOT_ARGUMENTS, multi_robot_launch_configs,
                                 node_launch_config, to_ros_args)

LAUNCH_DIR = Path(__file__).resolve().parents[2] / "launch"
NODE_ONLY = {"use_sim_time", "camera_info.enabled", "depth.enabled", "stereo.enabled", "odom.enabled",
             "image.compressed"}


def test_defaults_override_nothing_from_the_config_file():
    cfg = node_launch_config({})
    assert cfg.namespace == "" and cfg.params_files == ()
    assert cfg.overrides == {"use_sim_time": False, "camera_info.enabled": False, "depth.enabled": False,
                             "stereo.enabled": False, "odom.enabled": True}
    assert cfg.remappings == (("image", "image"), ("odom", "odom"))


def test_every_argument_maps_to_a_declared_parameter_or_remapping():
    args = {"model": "selavpr", "weights": "/w/sela.pth", "backend": "torch", "config": "/c.yaml",
            "namespace": "/robot7/", "robot_id": "", "image_topic": "/cam/image_raw",
            "camera_info_topic": "/cam/camera_info", "depth_topic": "/cam/depth",
            "right_image_topic": "/cam/right/image_raw", "right_camera_info_topic": "/cam/right/camera_info",
            "odom_topic": "", "use_sim_time": "True",
            "map_load": "/maps/prior", "map_save": "/maps/out"}
    cfg = node_launch_config(args)
    assert cfg.namespace == "robot7" and cfg.params_files == ("/c.yaml",)
    assert cfg.overrides == {
        "use_sim_time": True, "model.preset": "selavpr", "model.weights": "/w/sela.pth",
        "model.backend": "torch", "map.load_path": "/maps/prior", "map.save_path": "/maps/out",
        "detector.robot_id": "robot7", "camera_info.enabled": True, "depth.enabled": True,
        "stereo.enabled": True, "odom.enabled": False}
    assert dict(cfg.remappings) == {"image": "/cam/image_raw", "camera_info": "/cam/camera_info",
                                    "depth": "/cam/depth", "right/image": "/cam/right/image_raw",
                                    "right/camera_info": "/cam/right/camera_info"}
    assert cfg.parameters == ["/c.yaml", cfg.overrides]
    core = {s.name for s in flat_field_specs()}
    assert set(cfg.overrides) <= core | NODE_ONLY


def test_image_compressed_argument_sets_the_node_parameter_and_empty_keeps_the_config_files():
    # Issue 18: a compressed camera topic needed image.compressed, which no launch argument could set.
    cfg = node_launch_config({"image_topic": "/cam/image_raw/compressed", "image_compressed": "true"})
    assert cfg.overrides["image.compressed"] is True
    assert dict(cfg.remappings)["image"] == "/cam/image_raw/compressed"
    argv = to_ros_args(cfg)
    assert "image.compressed:=true" in argv and "image:=/cam/image_raw/compressed" in argv
    assert node_launch_config({"image_compressed": "False"}).overrides["image.compressed"] is False
    assert "image.compressed" not in node_launch_config({"image_compressed": ""}).overrides
    assert all(c.overrides["image.compressed"] for c in multi_robot_launch_configs({"image_compressed": "on"}))
    with pytest.raises(ValueError, match="image_compressed"):
        node_launch_config({"image_compressed": "jpeg"})
    settings = {s.name: s for s in all_parameter_specs()}
    assert settings["image.compressed"].type is bool  # the parameter the argument sets exists


def test_explicit_robot_id_wins_over_namespace():
    assert node_launch_config({"namespace": "a", "robot_id": "b"}).overrides["detector.robot_id"] == "b"


@pytest.mark.parametrize("args", [{"modle": "x"}, {"use_sim_time": "maybe"}, {"depth_topic": "/d"},
                                  {"right_image_topic": "/r", "camera_info_topic": "/c"}])
def test_bad_arguments_are_rejected_by_name(args):
    with pytest.raises(ValueError, match=next(iter(args))):
        node_launch_config(args)


def test_ros_args_keep_string_values_strings():
    cfg = node_launch_config({"robot_id": "1", "model": "true", "namespace": "r", "config": "/p.yaml"})
    argv = to_ros_args(cfg)
    assert argv[:5] == ["--ros-args", "-r", "__node:=loop_closure_node", "-r", "__ns:=/r"]
    assert argv[argv.index("--params-file") + 1] == "/p.yaml"
    params = {a.split(":=")[0]: yaml.safe_load(a.split(":=", 1)[1])
              for prev, a in zip(argv, argv[1:]) if prev == "-p"}
    assert params["detector.robot_id"] == "1" and params["model.preset"] == "true"
    assert params["use_sim_time"] is False


def test_multi_robot_gives_one_node_per_namespace_with_its_own_map():
    cfgs = multi_robot_launch_configs({"robots": "r1, /r2", "map_save": "/maps", "image_topic": "cam"})
    assert [c.namespace for c in cfgs] == ["r1", "r2"]
    assert [c.overrides["detector.robot_id"] for c in cfgs] == ["r1", "r2"]
    assert [c.overrides["map.save_path"] for c in cfgs] == ["/maps/r1", "/maps/r2"]
    assert all(dict(c.remappings)["image"] == "cam" for c in cfgs)
    for bad in ({"robots": "a,a"}, {"robots": ""}, {"robots": "a", "namespace": "x"}):
        with pytest.raises(ValueError):
            multi_robot_launch_configs(bad)


def _declared(path: Path) -> dict[str, ast.Call]:
    """Literal names of every launch argument the file declares (via _declare or DeclareLaunchArgument)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in (
                "_declare", "DeclareLaunchArgument") and node.args:
            name = node.args[0]
            if isinstance(name, ast.Constant) and isinstance(name.value, str):
                found[name.value] = node
    return found


@pytest.mark.parametrize("filename, expected", [
    ("loop_closure.launch.py", set(LAUNCH_ARGUMENTS)),
    ("multi_robot.launch.py", (set(LAUNCH_ARGUMENTS) - {"namespace", "robot_id"}) | set(MULTI_ROBOT_ARGUMENTS)),
])
def test_launch_file_parses_and_declares_exactly_the_accepted_arguments(filename, expected):
    path = LAUNCH_DIR / filename
    declared = _declared(path)  # ast.parse: a syntax error fails here
    assert set(declared) == expected
    source = path.read_text()
    assert "def generate_launch_description" in source and "OpaqueFunction(function=_nodes)" in source
    call = "multi_robot_launch_configs(values)" if filename.startswith("multi") else "node_launch_config(values)"
    assert call in source
    for name, (default, description) in {**LAUNCH_ARGUMENTS, **MULTI_ROBOT_ARGUMENTS}.items():
        assert len(description) > 30, f"launch argument {name} needs a real description"


def test_multi_robot_merges_maps_decentrally_by_default():
    assert all(c.overrides["fleet.enabled"] for c in multi_robot_launch_configs({"robots": "r1,r2"}))
    assert not any(c.overrides["fleet.enabled"] for c in multi_robot_launch_configs({"robots": "r1", "fleet": "false"}))
    with pytest.raises(ValueError, match="fleet"):
        multi_robot_launch_configs({"fleet": "maybe"})


def test_central_launch_gives_one_process_for_all_robots_and_one_map():
    from vpr_ros.launch_args import CENTRAL_ARGUMENTS, central_launch_config

    cfg = central_launch_config({"robots": "r1, /r2", "map_save": "/maps/shared", "image_topic": "cam",
                                 "config": "/c.yaml"})
    assert cfg.robots == ("r1", "r2") and cfg.arguments == ["--robots", "r1,r2"]
    assert cfg.node.namespace == "" and cfg.node.overrides["map.save_path"] == "/maps/shared"
    assert "detector.robot_id" not in cfg.node.overrides  # each robot's node gets its namespace as id
    argv = cfg.command_line()
    assert argv[:3] == ["--robots", "r1,r2", "--ros-args"] and not any(a.startswith("__node:=") for a in argv)
    assert "image:=cam" in argv and argv[argv.index("--params-file") + 1] == "/c.yaml"
    for bad in ({"robots": "a,a"}, {"robots": " , "}, {"robots": "a", "robot_id": "x"}):
        with pytest.raises(ValueError):
            central_launch_config(bad)
    declared = _declared(LAUNCH_DIR / "central.launch.py")
    assert set(declared) == (set(LAUNCH_ARGUMENTS) - {"namespace", "robot_id"}) | set(CENTRAL_ARGUMENTS)
    source = (LAUNCH_DIR / "central.launch.py").read_text()
    assert "central_launch_config(values)" in source and "executable=CENTRAL_EXECUTABLE" in source
    calls = [n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "Node"]
    assert len(calls) == 1 and not {k.arg for k in calls[0].keywords} & {"name", "namespace"}
