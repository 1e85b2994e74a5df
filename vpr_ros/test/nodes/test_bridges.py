"""The backend bridges over real DDS against stand-in peers (bridge_scenarios.py, bridge_standins.py).

No real backend runs here: the peers are stand-in nodes using interface packages written from the
peers' documented field lists (vpr_ros/test/interfaces/). ``test_stand_in_interfaces_*`` pins those
to the real packages: RTAB-Map's and pose_graph_tools' type hashes (REP 2011, over every field name,
type and order, nested types included) equal the hashes generated from the real packages, and
cslam's field lists equal its generated introspection code. Expected values are computed here from
the SIMULATED world with GTSAM's exponential map, independently of the bridges' own arithmetic.
"""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import bridge_standins as w
from conftest import netns_available, ros_env, scenario_runner
from vpr_ros.launch_bridges import BRIDGES, bridge_arguments, bridge_launch_config, bridge_ros_args
from vpr_ros.netns import netns_argv

HERE = Path(__file__).resolve().parent
VENV_SHARE = Path(sys.prefix) / "share"
LAUNCH_DIR = HERE.parents[1] / "launch"

# RIHS01 hashes generated from the real packages (rtabmap_msgs: rosidl description of
# rtabmap_msgs/srv/GetMap in a Jazzy build of introlab/rtabmap_ros; pose_graph_tools_msgs: that of
# PoseGraph in a ROS 2 build of MIT-SPARK/pose_graph_tools; docs/backends.md names the sources).
REAL_HASHES = {
    "rtabmap_msgs/msg/Link": "764301c2d5f3045b5f97420bd64629321ecef724a6010e3dfe5f5c3d4ce7ac0a",
    "rtabmap_msgs/msg/MapGraph": "25c8097ccc472a2134e59113106a13302b0025829ef39e2066e2075fa84228c4",
    "rtabmap_msgs/msg/MapData": "4b8c747c152724ea5de4e2be8809313bb49c7ad3753b32b99e7f50587c4ea6c9",
    "rtabmap_msgs/msg/Node": "47be2d62486c1292c77063759bc7bbb524d69c9f2ea24cfe3cf46930e40f7a36",
    "rtabmap_msgs/msg/SensorData": "af2cae415c417c8f18750b6e556d0a3098296cd09b28b03c574bf442dacd7cdc",
    "pose_graph_tools_msgs/msg/PoseGraph": "1010611eb14adb91140b5debb288865bf9881ad35835622b2e3a0fc5c905fb32",
    "pose_graph_tools_msgs/msg/PoseGraphEdge": "89f0823169856172917cce1538073740cb5a3d0de986053ffa0a19d3e177715d",
}
# Field lists of lajoiepy/cslam_interfaces' generated introspection code (cslam_common_interfaces).
CSLAM_FIELDS = {
    "KeyframeOdom": {"id": "uint32", "odom": "nav_msgs/Odometry", "gps": "sensor_msgs/NavSatFix"},
    "IntraRobotLoopClosure": {"keyframe0_id": "uint32", "keyframe1_id": "uint32", "success": "boolean",
                              "transform": "geometry_msgs/Transform"},
    "InterRobotLoopClosure": {"robot0_keyframe_id": "uint32", "robot0_id": "uint32", "robot1_keyframe_id": "uint32",
                              "robot1_id": "uint32", "success": "boolean", "transform": "geometry_msgs/Transform"},
}


def _built(package: str) -> None:
    try:
        importlib.import_module(f"{package}.msg")
    except ImportError:
        pytest.skip(f"{package} stand-in not built; run scripts/build_msgs.sh .venv vpr_ros/test/interfaces/{package}")


@pytest.mark.parametrize("type_name", sorted(REAL_HASHES))
def test_stand_in_interfaces_have_the_real_type_hashes(type_name):
    package, _, name = type_name.split("/")
    _built(package)
    found = json.loads((VENV_SHARE / package / "msg" / f"{name}.json").read_text())["type_hashes"][0]
    assert found["type_name"] == type_name and found["hash_string"] == "RIHS01_" + REAL_HASHES[type_name]


def test_stand_in_interfaces_have_cslams_fields_in_order():
    _built("cslam_common_interfaces")
    msgs = importlib.import_module("cslam_common_interfaces.msg")
    for name, fields in CSLAM_FIELDS.items():
        assert list(getattr(msgs, name).get_fields_and_field_types().items()) == list(fields.items())


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    reason = netns_available()
    if reason is not None:
        pytest.skip(reason)
    for package in ("rtabmap_msgs", "cslam_common_interfaces", "pose_graph_tools_msgs", "vpr_ros_msgs"):
        _built(package)
    run = scenario_runner(HERE / "bridge_scenarios.py", tmp_path_factory.mktemp("bridges"))
    out = run("bridges", timeout=50.0)
    assert out["ready"] and out["done"], out["_logs"]
    return out


def matrix(v):
    return w.xyzq_matrix(v)


def jacobian(edge_of):
    """J with edge_of(exp(d)) ~= edge_of(I) exp(J d) (d: right perturbation of the camera loop)."""
    base, h, J = edge_of(np.eye(4)), 1e-6, np.zeros((6, 6))
    for i in range(6):
        d = np.zeros(6)
        d[i] = h
        J[:, i] = (w.log_ros(np.linalg.inv(base) @ edge_of(w.exp_ros(d)))
                   - w.log_ros(np.linalg.inv(base) @ edge_of(w.exp_ros(-d)))) / (2 * h)
    return J


def base_loop(name):
    """The loop between the bases (what every metric backend gets) as a function of a camera perturbation."""
    X = w.X_BASE_CAM
    return lambda E: X @ w.camera_loop(name) @ E @ np.linalg.inv(X)


def test_rtabmap_gets_user_links_between_its_nodes_with_the_information_in_its_order(result):
    links = {(l["from"], l["to"]): l for l in result["links"]}
    assert set(links) == {(105, 100), (103, 101)}  # L1, L2; L3 has no node, L4 another robot, L5 monocular
    for (q, m), link in links.items():
        assert link["type"] == 4  # kUserClosure, from = the newer (query) node
        node_q, node_m = (w.pose_at(w.kf_stamp(k - 100) + w.NODE_DELAY_NS) for k in (q, m))
        np.testing.assert_allclose(matrix(link["transform"]), np.linalg.inv(node_q) @ node_m, atol=1e-6)
        kf_q, kf_m = w.pose_at(w.kf_stamp(q - 100)), w.pose_at(w.kf_stamp(m - 100))
        name = {(105, 100): "L1", (103, 101): "L2"}[(q, m)]
        gap_q, gap_m = np.linalg.inv(node_q) @ kf_q, np.linalg.inv(kf_m) @ node_m
        J = jacobian(lambda E: gap_q @ np.linalg.inv(base_loop(name)(E)) @ gap_m)
        expected = np.linalg.inv(J @ w.COVARIANCE_CAM @ J.T)
        np.testing.assert_allclose(np.reshape(link["information"], (6, 6)), expected, rtol=2e-4,
                                   atol=1e-6 * np.abs(expected).max())
    d = result["diagnostics"]["rtabmap_bridge"]
    assert (d["links_sent"], d["links_accepted"], d["links_rejected"]) == ("2", "1", "1")
    assert (d["unmatched"], d["skipped.other_robot"], d["skipped.scale_unknown"]) == ("1", "1", "1")
    assert d["stamp_gap_uncorrected"] == "0" and d["information_clamped"] == "0"


def test_cslam_gets_our_keyframes_with_odometry_and_between_factors_match_to_query(result):
    kfs = {m["id"]: m for m in result["keyframe_odom"]}
    assert sorted(kfs) == list(range(w.KEYFRAMES))
    for k, m in kfs.items():  # keyframe 5 came without a pose: its pose is the odometry at its stamp
        assert m["stamp_ns"] == w.kf_stamp(k) and m["frame_id"] == "odom"
        np.testing.assert_allclose(matrix(m["pose"]), w.pose_at(w.kf_stamp(k)), atol=1e-9)
    intra = {(m["kf0"], m["kf1"]): m for m in result["intra"]}
    assert set(intra) == {(0, 5), (1, 3), (1, 6)} and all(m["success"] for m in intra.values())
    for (k0, k1), m in intra.items():  # Between(kf0, kf1) = pose of kf1 in kf0
        np.testing.assert_allclose(matrix(m["transform"]),
                                   np.linalg.inv(w.pose_at(w.kf_stamp(k0))) @ w.pose_at(w.kf_stamp(k1)), atol=1e-6)
    (inter,) = result["inter"]  # robot_names robot1,robot2 -> 0, 1; robot0 = the match (robot2's kf 7)
    assert (inter["robot0"], inter["kf0"], inter["robot1"], inter["kf1"], inter["success"]) == (1, 7, 0, 2, True)
    np.testing.assert_allclose(matrix(inter["transform"]),
                               np.linalg.inv(w.OTHER_POSE) @ w.pose_at(w.kf_stamp(2)), atol=1e-6)
    d = result["diagnostics"]["cslam_bridge"]
    assert d["skipped.scale_unknown"] == "1" and "ignored by cslam" in d["covariance"]


@pytest.mark.parametrize("key", ["hydra", "hydra_index"])
def test_hydra_gets_loop_closure_edges_keyed_by_stamps_or_indices_with_the_covariance(result, key):
    edges = [e for graph in result[key] for e in graph["edges"]]
    assert len(edges) == 4 and all(g["nodes"] == 0 and len(g["edges"]) == 1 for g in result[key])
    for name, edge in zip(("L1", "L2", "L3", "L4"), edges):
        (qr, qk), (mr, mk), _ = w.LOOPS[name]
        assert edge["type"] == 1 and edge["stamp_ns"] == w.loop_stamp(qr, qk)
        if key == "hydra":  # keys are the stamps; robots the numbers of the robot ids
            assert (edge["key_from"], edge["key_to"]) == (w.loop_stamp(qr, qk), w.loop_stamp(mr, mk))
            assert (edge["robot_from"], edge["robot_to"]) == (int(qr[-1]), int(mr[-1]))
        else:  # Kimera-PGMO: keyframe indices (it adds the robot's prefix itself: Symbol(prefix(robot_from),
            # key_from)), robots in robot_names order; it reads pose = from_T_to, so from = match, to = query
            # (BetweenFactor(match, query, T_match_query), error in the query frame, where our covariance is)
            assert (edge["key_from"], edge["key_to"]) == (mk, qk)
            number = {w.ROBOT: 0, w.OTHER_ROBOT: 1}
            assert (edge["robot_from"], edge["robot_to"]) == (number[mr], number[qr])
        # pose: the query base in the match base (Hydra's to_T_from with from = query; Kimera's from_T_to)
        np.testing.assert_allclose(matrix(edge["pose"]), np.linalg.inv(w.world_base(mr, mk)) @ w.world_base(qr, qk),
                                   atol=1e-6)
        J = jacobian(base_loop(name))
        cov = J @ w.COVARIANCE_CAM @ J.T
        if key == "hydra_index":  # covariance_order rotation_first
            cov = cov[np.ix_([3, 4, 5, 0, 1, 2], [3, 4, 5, 0, 1, 2])]
        np.testing.assert_allclose(np.reshape(edge["covariance"], (6, 6)), cov, rtol=1e-4, atol=1e-10)


def test_lio_sam_gets_stamp_pairs_at_least_30_s_apart_and_no_pose(result):
    sec = lambda k: w.kf_stamp(k) / w.NS  # noqa: E731
    assert result["lio_sam"] == [[sec(5), sec(0)], [sec(6), sec(1)], [sec(4), sec(0)]]
    d = result["diagnostics"]["lio_sam_bridge"]
    assert (d["skipped.too_close_in_time"], d["skipped.other_stream"], d["requests_sent"]) == ("1", "1", "3")


def test_a_missing_peer_package_or_a_bad_parameter_stops_the_bridge_with_a_message_naming_it(tmp_path):
    if netns_available() is not None:
        pytest.skip(netns_available())
    code = ("import sys; sys.modules['rtabmap_msgs'] = None; "
            "from vpr_ros.nodes.bridges.rtabmap_bridge import main; sys.exit(main([]))")
    proc = subprocess.run(netns_argv([sys.executable, "-c", code]), env=ros_env(tmp_path), capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 2, proc.stderr
    assert "needs the message package 'rtabmap_msgs'" in proc.stderr and "rtabmap-msgs" in proc.stderr
    bad = [sys.executable, "-m", "vpr_ros.nodes.bridges.hydra_bridge", "--ros-args", "-p", "hydra.key_mode:=keys"]
    proc = subprocess.run(netns_argv(bad), env=ros_env(tmp_path), capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "hydra.key_mode" in proc.stderr and "stamp_ns, index" in proc.stderr, proc.stderr


@pytest.mark.parametrize("backend", sorted(BRIDGES))
def test_launch_files_call_the_tested_launch_logic(backend):
    source = (LAUNCH_DIR / f"{backend}_bridge.launch.py").read_text()
    tree = ast.parse(source)  # a syntax error fails here
    consts = [n.value.value for n in ast.walk(tree) if isinstance(n, ast.Assign) and isinstance(n.value, ast.Constant)]
    assert backend in consts and "bridge_launch_config(BACKEND, values)" in source
    assert "OpaqueFunction(function=_nodes)" in source and "bridge_arguments(BACKEND)" in source
    for name, (default, description) in bridge_arguments(backend).items():
        assert len(description) > 30, f"{backend}: launch argument {name} needs a real description"
    cfg = bridge_launch_config(backend, {})
    assert cfg.name == BRIDGES[backend].executable and cfg.overrides == {"use_sim_time": False}


def test_launch_arguments_become_parameters_and_remaps_and_bad_ones_are_named():
    cfg = bridge_launch_config("rtabmap", {"namespace": "/robot1/", "rtabmap_namespace": "rtabmap",
                                           "base_from_body": "0.1, 0, 0.2, 0, 0, 0, 1", "max_stamp_diff_sec": "0.5"})
    assert cfg.namespace == "robot1" and dict(cfg.remappings)["add_link"] == "rtabmap/add_link"
    assert cfg.overrides["base_from_body"] == [0.1, 0, 0.2, 0, 0, 0, 1.0]
    assert cfg.overrides["rtabmap.max_stamp_diff_sec"] == 0.5
    assert "base_from_body:=[0.1, 0.0, 0.2, 0.0, 0.0, 0.0, 1.0]" in bridge_ros_args(cfg)
    assert bridge_launch_config("hydra", {"key_mode": "index"}).overrides["hydra.key_mode"] == "index"
    for backend, args in (("rtabmap", {"base_from_body": "1 2 3"}), ("hydra", {"key_mode": "keys"}),
                          ("cslam", {"cslam_robot_id": "one"}), ("lio_sam", {"min_separation_sec": "x"}),
                          ("lio_sam", {"rtabmap_namespace": "r"})):
        with pytest.raises(ValueError, match=next(iter(args))):
            bridge_launch_config(backend, args)
