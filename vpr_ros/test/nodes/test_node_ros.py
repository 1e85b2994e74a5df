"""The real node with the real rclpy and the real vpr_ros_msgs, each scenario in a private netns.

Scenarios live in ``scenarios.py`` (run as a subprocess by the ``run_scenario`` fixture); this
module prepares their inputs and asserts on what they observed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from vpr_ros.core.config import config_from_flat, flat_field_specs, flatten_parameters, load_config
from vpr_ros.nodes.settings import node_parameter_names
from vpr_ros.core.detector import LoopClosureDetector
from vpr_ros.core.map.snapshot import load_keyframes
from vpr_ros.core.types import Frame
from vpr_ros.launch_args import node_launch_config

from revisit_data import corridor_revisit
from tiny_extractor import TinyExtractor

CONFIG_YAML = Path(__file__).resolve().parents[2] / "config" / "loop_closure.yaml"
CORE_NAMES = {s.name for s in flat_field_specs()}
FRAMES = 20  # per traversal: 20 reference + 20 query frames


def _test_yaml(tmp_path: Path) -> Path:
    """The package's YAML with the tiny test model and loss-free QoS (all through the params file)."""
    doc = yaml.safe_load(CONFIG_YAML.read_text())
    params = doc["/**"]["ros__parameters"]
    params["verify"]["min_matches"] = 60
    params.update(extractor_factory="tiny_extractor:build", qos={"reliability": "reliable", "depth": 100},
                  queue={"size": 100}, diagnostics={"period_sec": 0.2})
    path = tmp_path / "test_params.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _offline_loops(core_flat: dict[str, Any], live_map: Path | None = None) -> tuple[list[Any], int]:
    detector = LoopClosureDetector(config_from_flat(core_flat), TinyExtractor())
    if live_map is not None:  # the node appends to a live map at map.save_path: candidates come back float16
        detector.attach_store(live_map)
    loops = []
    for stamp, image in corridor_revisit(FRAMES):
        loops += detector.process(Frame(stamp, image)).loop_closures
    return loops, detector.num_keyframes


def test_revisit_through_launch_config_matches_offline_detector(run_scenario, tmp_path):
    params = _test_yaml(tmp_path)
    launch_args = {"config": str(params), "namespace": "robot1", "image_topic": "/cam/image_raw",
                   "odom_topic": "", "map_save": str(tmp_path / "saved_map")}
    result = run_scenario("revisit", "--launch-args", json.dumps(launch_args), "--frames", str(FRAMES),
                          "--rate", "40", timeout=90)
    logs = result["_logs"] + result["log"]
    assert result["settled"], logs
    assert result["diag"]["frames_processed"] == str(2 * FRAMES) and result["diag"]["frames_dropped"] == "0", logs

    # What the core computes offline with the same parameters: the YAML plus the launch overrides.
    launch = node_launch_config(launch_args)
    flat = {k: v for k, v in flatten_parameters(yaml.safe_load(params.read_text())["/**"]["ros__parameters"]).items()
            if k in CORE_NAMES}
    flat.update({k: v for k, v in launch.overrides.items() if k in CORE_NAMES})
    expected, num_keyframes = _offline_loops(flat, tmp_path / "offline_live_map")
    assert len(expected) >= 5, "the revisit must produce loop closures offline for this test to mean anything"

    got = result["loops"]
    assert [(m["query_id"], m["match_id"]) for m in got] == [(e.query_id, e.match_id) for e in expected], logs
    for m, e in zip(got, expected):
        assert m["query_stamp_ns"] == e.query_stamp_ns == m["header_stamp_ns"]
        assert m["match_stamp_ns"] == e.match_stamp_ns
        assert m["score"] == pytest.approx(e.score, rel=1e-6)
        assert m["global_similarity"] == pytest.approx(e.global_similarity, abs=1e-6)
        assert (m["retrieval_rank"], m["local_matches"], m["local_features"], m["consistent_keyframes"]) == (
            e.retrieval_rank, e.local_matches, e.local_features, e.consistent_keyframes)
        assert m["query_robot_id"] == m["match_robot_id"] == "robot1"  # robot_id from the namespace
        # frames.base_frame: relative_pose is between the keyframes' base frames, not a pose in "map" (issue 21)
        assert m["frame_id"] == "base_link" and m["verification_method"] == "mnn"
        assert m["descriptor_model"] == "tiny-pixels@test" and m["descriptor_dim"] == TinyExtractor.global_dim
        assert not m["relative_pose_valid"]
    # Clean SIGINT shutdown saved the map (map_save launch argument -> map.save_path).
    assert result["rc"] == 0, logs
    _, saved = load_keyframes(tmp_path / "saved_map", "tiny-pixels@test")
    assert len(saved) == num_keyframes == 2 * FRAMES


def test_map_services_round_trip(run_scenario):
    r = run_scenario("map_services", "--frames", "6", timeout=60)
    logs = r["_logs"] + r["log"]
    assert r["save"][:2] == [True, 12], logs
    assert r["save_no_path"][0] is False and "map.save_path" in r["save_no_path"][1]
    # ~/reset starts a new session and keeps every keyframe (it used to empty the map)
    assert r["reset"][0] is True and "new session" in r["reset"][1] and r["index_after_reset"] == 12, logs
    assert r["load"][:2] == [True, 0] and r["index_after_load"] == 12, logs  # already in the map: skipped
    assert r["load_missing"][0] is False and "no_such_map" in r["load_missing"][1]
    assert r["index_after_failed_load"] == 12  # a failed load keeps the map
    assert r["alive"] and r["rc"] == 0, logs


def test_bad_inputs_are_counted_and_the_node_keeps_running(run_scenario):
    r = run_scenario("bad_inputs", timeout=60)
    logs = r["_logs"] + r["log"]
    raw, jpg = r["raw"], r["jpg"]
    assert r["alive"] == [True, True] and r["rc"] == [0, 0], logs
    assert {k: raw[f"bad_input.{k}"] for k in ("unknown_encoding", "empty_image", "malformed_image",
                                               "time_backwards", "nan_odometry")} == {
        "unknown_encoding": "1", "empty_image": "1", "malformed_image": "1", "time_backwards": "1",
        "nan_odometry": "1"}, logs
    assert raw["frames_processed"] == "3" and raw["frames_received"] == "10", logs
    # 1x1 and all-black mono16 give an all-zero descriptor; 20000x20000 is refused unread.
    assert (raw["bad_input.unusable_image"], raw["bad_input.too_large"]) == ("2", "1"), logs
    assert jpg["bad_input.too_large"] == "1" and jpg["frames_received"] == "7", logs
    for a in r["accounted"]:  # every frame received ends in exactly one counter
        assert a["processed"] + a["dropped"] + a["failed"] + a["bad"] == a["received"], (a, logs)
    assert {k: jpg[f"bad_input.{k}"] for k in ("corrupt_compressed", "empty_image", "unknown_encoding")} == {
        "corrupt_compressed": "1", "empty_image": "1", "unknown_encoding": "1"}, logs
    assert jpg["frames_processed"] == "3", logs
    assert "bad input" in r["log"]  # logged (throttled) as well as counted


def test_back_pressure_keeps_queue_bounded_and_counts_drops(run_scenario):
    r = run_scenario("back_pressure", "--frames", "60", timeout=60)  # 60 frames at 30 Hz, 0.2 s/frame
    logs = r["_logs"] + r["log"]
    d = {k: float(v) for k, v in r["diag"].items() if k[0].isalpha() and v.replace(".", "").isdigit()}
    assert r["all_received"] and r["received_lag_sec"] < 1.0, logs  # callbacks never wait for the model
    assert r["depth_samples"] >= 10 and 0 < r["max_depth"] <= 3, logs
    assert d["frames_received"] == 60 and d["frames_dropped"] >= 30, logs
    assert d["frames_processed"] + d["frames_dropped"] == 60, logs
    assert d["latency_ms.extract.p50"] >= 190.0  # the slowed model really ran
    assert r["alive"] and r["rc"] == 0, logs


def test_yaml_parameters_reach_the_core_config(run_scenario):
    r = run_scenario("yaml_params", "--params-file", str(CONFIG_YAML), "--ros-arg=-p",
                     "--ros-arg=index.top_k:=7", "--ros-arg=-p", "--ros-arg=queue.size:=9", timeout=40)
    expected = load_config(CONFIG_YAML, overrides={"index.top_k": 7}, skip_keys=node_parameter_names())
    assert config_from_flat(r["config"]) == expected
    assert r["settings"]["queue_size"] == 9
    assert r["top_k_range"] == [1, 1000] and r["top_k_read_only"] and "Global candidates" in r["top_k_description"]
    assert r["sim_range"] == [-1.0, 1.0]
    assert r["set_read_only"] is False and r["set_debug"] is True and r["debug_now"] is True


def test_invalid_parameters_stop_startup_with_a_clear_message(run_scenario, tmp_path):
    cases = {
        "verify.min_matches": ["-p", "verify.min_matches:=-5"],
        "verify.method": ["-p", "verify.method:='bogus'"],
        "keyframes.min_gap_sec": ["-p", "keyframes.min_gap_sec:=1"],     # an int for a double
        "verify.min_match": ["-p", "verify.min_match:=3"],               # a typo
        "qos.reliability": ["-p", "qos.reliability:='sometimes'"],
        "map.load_path": ["-p", f"map.load_path:='{tmp_path / 'missing_map'}'"],
        "detector.min_loop_gap_sec": ["-p", "detector.min_loop_gap_sec:=.inf"],  # overflowed per frame
        "map.save_path": ["-p", "map.save_path:=.."],
        "map.save_path (a user's folder)": ["-p", f"map.save_path:='{tmp_path / 'user_folder'}'"],
        "map.save_path (a user's folder, snapshots)": ["-p", f"map.save_path:='{tmp_path / 'user_folder'}'",
                                                       "-p", "map.append:=false"],
        "text.fused_weight": ["-p", "text.fused_weight:=1.0"],  # offline only: refused, not ignored
    }
    (tmp_path / "user_folder").mkdir()
    (tmp_path / "user_folder" / "notes.txt").write_text("not a map")
    r = run_scenario("invalid_params", "--cases", json.dumps(cases), timeout=120)
    for name, outcome in r.items():
        if name.startswith("_"):
            continue
        assert not outcome["timed_out"] and outcome["rc"] not in (0, None), (name, outcome)
        assert "startup failed" in outcome["log"] and name.split(".")[0] in outcome["log"], (name, outcome["log"])
    assert "verify.min_matches" in r["verify.min_match"]["log"]  # did-you-mean hint
    assert "1.0" in r["keyframes.min_gap_sec"]["log"]
    assert "bogus" in r["verify.method"]["log"] and "mnn" in r["verify.method"]["log"]
    assert [p.name for p in (tmp_path / "user_folder").iterdir()] == ["notes.txt"]  # refused, left alone


def test_damaged_maps_and_bad_save_paths_answer_and_keep_the_keyframes(run_scenario):
    r = run_scenario("map_faults", "--frames", "6", timeout=60)
    logs = r["_logs"] + r["log"]
    assert r["good"][:2] == [True, 12], logs
    assert len(r["calls"]) == 8
    for call, (success, message) in r["calls"].items():
        assert success is False, (call, message, logs)  # an answer (None: the node died), and a refusal
        assert message, call
    assert "names no directory of its own" in r["calls"]["save_map ."][1]
    assert "names no directory of its own" in r["calls"]["save_map .."][1]
    assert r["a_file"] == "not a directory"  # a refused save leaves what was there
    assert r["index_after"] == 12 and r["save_after"] == [True, 12], logs  # nothing lost in memory
    assert r["alive"] and r["rc"] == 0, logs


def test_autosave_survives_sigkill_and_budget_warns(run_scenario, tmp_path):
    r = run_scenario("autosave", "--frames", "4", timeout=60)
    logs = r["_logs"] + r["log"]
    assert r["alive"] == [True, True], logs
    ok, bad = r["ok"], r["bad"]
    assert int(ok["autosaves"]) >= 1 and ok["autosave_failures"] == "0", logs
    _, saved = load_keyframes(tmp_path / "auto", "tiny-pixels@test")
    assert len(saved) == 4, logs  # SIGKILL after the last autosave: every keyframe is on disk
    assert float(ok["map_memory_mb"]) == pytest.approx(4 * (768 + 12 * 16 * 36) * 4 / 1e6, abs=0.01)
    level, message = r["status"]["ok"]
    assert level == 1 and "memory_budget_mb" in message, r["status"]  # WARN
    assert int(bad["autosave_failures"]) >= 1 and int(bad["autosaves"]) == 0, logs
    assert "autosave failed" in r["log"]
    assert r["rc"][1] == 0 and "at shutdown: could not save" in r["log"], logs  # logged, not a traceback
    assert "Traceback" not in r["log"], logs
    assert (tmp_path / "blocked").read_text() == "user data"  # refused saves left the user's file alone


def test_stereo_loop_carries_the_ground_truth_pose_and_is_counted(run_scenario):
    # The real default model (lite0-gem, ONNX Runtime) on raw EuRoC stereo pairs with CameraInfo,
    # as a camera driver publishes them: the node must build camera, rig and Frame itself.
    import numpy as np

    from euroc_stream import camera_truth, load_euroc
    from vpr_ros.cli.bench.geometry import rotation_error_deg
    from vpr_ros.io.poses import pose_matrix

    r = run_scenario("stereo_pose", timeout=90)
    assert r["settled"] and r["rc"] == 0, r["_logs"]
    euroc = load_euroc()
    names = {(100 + 100 * i) * 10**9: f"left_img_{i}" for i in range(4)}
    pairs = [(names[lp["query_stamp_ns"]], names[lp["match_stamp_ns"]]) for lp in r["loops"]]
    assert pairs == [("left_img_1", "left_img_0"), ("left_img_3", "left_img_2")], r["_logs"]
    for loop, (query, match) in zip(r["loops"], pairs):
        assert loop["relative_pose_valid"] and loop["translation_scale_known"] and loop["geometric_inliers"] >= 100
        assert (loop["geometry_method"], loop["geometry_rejection"]) == ("pnp", "")
        T = pose_matrix(loop["position"], loop["orientation"])
        truth = camera_truth(euroc, query, match)
        assert rotation_error_deg(T, truth) < 2.0
        assert np.linalg.norm(T[:3, 3] - truth[:3, 3]) < 0.10
        cov = np.reshape(loop["covariance"], (6, 6))
        assert np.allclose(cov, cov.T) and np.all(np.linalg.eigvalsh(cov) > 0)
    d = r["diag"]
    assert d["geometry.valid"] == "2" and d["loop_closures"] == "2"
    assert d["right_image_received"] == "4" and d["right_missing"] == "0" and d["right_unusable"] == "0"
    assert d["camera_info_missing"] == "0" and d["camera_info_unusable"] == "0"
    assert all(v == "0" for k, v in d.items() if k.startswith("geometry.rejected."))


def test_monocular_loop_carries_rotation_and_unit_direction_without_scale(run_scenario):
    # camera_info alone: the raw (distorted) EuRoC left images give an essential-matrix pose.
    import numpy as np

    from euroc_stream import camera_truth, load_euroc
    from vpr_ros.cli.bench.geometry import direction_error_deg, rotation_error_deg
    from vpr_ros.io.poses import pose_matrix

    r = run_scenario("stereo_pose", "--mono", timeout=90)
    assert r["settled"] and r["rc"] == 0 and len(r["loops"]) == 2, r["_logs"]
    euroc = load_euroc()
    for loop, (query, match) in zip(r["loops"], [("left_img_1", "left_img_0"), ("left_img_3", "left_img_2")]):
        assert loop["relative_pose_valid"] and not loop["translation_scale_known"]
        assert loop["geometry_method"] == "essential"
        T = pose_matrix(loop["position"], loop["orientation"])
        truth = camera_truth(euroc, query, match)
        assert rotation_error_deg(T, truth) < 3.0
        assert np.linalg.norm(T[:3, 3]) == pytest.approx(1.0, abs=1e-6)
        assert direction_error_deg(T[:3, 3], truth[:3, 3]) < 15.0
    d = r["diag"]
    assert d["geometry.valid"] == "2" and d["right_image_received"] == "0" and d["camera_info_missing"] == "0"


def test_markers_draw_keyframes_and_loop_edges_with_odometry(run_scenario):
    r = run_scenario("markers", "--frames", "12", timeout=60)
    logs = r["_logs"] + r["log"]
    assert r["count"] >= 1, logs
    assert r["keyframe_points"] == 24, logs  # every keyframe has an odometry pose, so every one is drawn
    assert r["loops"] >= 1 and r["edge_points"] == 2 * r["loops"], logs  # one line (two points) per loop
    assert r["frame_id"] == "odom" and r["rc"] == 0, logs  # the odometry's frame, not detector.map_frame


def test_pipelined_and_sequential_nodes_publish_the_same_loops(run_scenario):
    """``pipeline`` on and off on the Corridor revisit (camera faster than the slowed model, so the
    pipelined node works with both stages busy): the same loops as each other and as offline."""
    r = run_scenario("pipeline_modes", "--frames", str(FRAMES), "--rate", "100", timeout=120)
    logs = r["_logs"] + r["log"]
    assert r["settled"] == [True, True], logs
    for ns, mode in (("pipe", "on"), ("seq", "off")):
        d = r["diag"][ns]
        assert d["pipeline"] == mode, logs
        assert (d["frames_processed"], d["frames_dropped"], d["frames_failed"]) == (str(2 * FRAMES), "0", "0"), logs
        assert r["rc"][ns] == 0, logs  # clean SIGINT shutdown in both modes
    expected, _ = _offline_loops({"verify.min_matches": 60})
    assert len(expected) >= 5, "the revisit must produce loop closures offline for this test to mean anything"
    assert r["loops"]["pipe"] == r["loops"]["seq"], logs  # every field, in order
    assert [(m["query_id"], m["match_id"]) for m in r["loops"]["pipe"]] == [
        (e.query_id, e.match_id) for e in expected], logs
    assert [m["score"] for m in r["loops"]["pipe"]] == pytest.approx([e.score for e in expected], rel=1e-6)
