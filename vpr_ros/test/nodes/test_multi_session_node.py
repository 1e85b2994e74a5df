"""The node loads every map named in ``map.load_path`` (comma-separated) at startup."""

from __future__ import annotations

from vpr_ros.core.config import config_from_flat
from vpr_ros.core.detector import LoopClosureDetector
from vpr_ros.core.types import Frame

from revisit_data import corridor_revisit
from test_node_ros import CONFIG_YAML
from tiny_extractor import TinyExtractor


def test_map_load_path_with_two_maps_loads_both_sessions(run_scenario, tmp_path):
    frames = corridor_revisit(4)
    sizes = {}
    for session, part in (("mon", frames[:4]), ("tue", frames[4:])):
        detector = LoopClosureDetector(config_from_flat({"detector.session_id": session}), TinyExtractor())
        for stamp, image in part:
            detector.process(Frame(stamp, image))
        sizes[session] = detector.save_map(tmp_path / session)
    assert all(sizes.values())
    r = run_scenario("yaml_params", "--params-file", str(CONFIG_YAML), "--ros-arg=-p",
                     f"--ros-arg=map.load_path:='{tmp_path / 'mon'},{tmp_path / 'tue'}'", timeout=40)
    assert r["config"]["map.load_path"] == f"{tmp_path / 'mon'},{tmp_path / 'tue'}"
    assert r["num_keyframes"] == sizes["mon"] + sizes["tue"], r["_logs"]
    assert r["sessions"] == ["mon", "tue"]
