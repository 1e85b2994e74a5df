"""Relocalisation in the real node (issue 21) over DDS: global_pose as AMCL checks it, ~/relocalize and
the trigger topic in on_demand mode, once mode through the nav2 launch preset, map -> odom on /tf, and
the camera's pose on the robot from frames.base_from_camera. SIMULATED (RENDERED from real photographs)
data: relocalization_data.py; the scenario: relocalization_scenarios.py. Plus the node module's pure
parts (message conversion, the camera mount with a TF stand-in, base-frame camera inputs) without DDS.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from geometry_msgs.msg import Transform
from scipy.spatial.transform import Rotation
from sensor_msgs.msg import CameraInfo

from vpr_ros.core.config import FramesConfig
from vpr_ros.core.localization.relocalizer import Fix
from vpr_ros.nodes.relocalization import fix_to_msg
from vpr_ros.nodes.settings import settings_from_flat
from vpr_ros.nodes.tf_frames import BaseFrameInputs, CameraMount, matrix_to_transform, transform_to_matrix

from conftest import scenario_runner
from relocalization_data import BASE_FROM_CAMERA, base_from_camera_param

HERE = Path(__file__).resolve().parent
AMCL_ENTRIES = (0, 1, 6, 7, 35)  # x, y (and their cross terms) and yaw: what AMCL reads


def _matrix(position, quaternion) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = Rotation.from_quat(quaternion).as_matrix()
    T[:3, 3] = position
    return T


def _error(T_est: np.ndarray, T_true: np.ndarray) -> tuple[float, float]:
    d = np.linalg.solve(T_true, T_est)
    degrees = float(np.degrees(Rotation.from_matrix(d[:3, :3]).magnitude()))
    return float(np.linalg.norm(T_est[:3, 3] - T_true[:3, 3])), degrees


def _check_like_amcl(pose: dict, frames: dict[int, dict]) -> None:
    """What AMCL's initialpose handler checks and reads, and that the pose is the true one."""
    assert pose["frame_id"] == "map"  # AMCL ignores any frame other than its global_frame_id
    assert pose["stamp_ns"] in frames  # the image's stamp, not "now"
    cov = np.asarray(pose["covariance"], np.float64).reshape(6, 6)
    assert np.all(np.isfinite(cov)) and np.allclose(cov, cov.T, atol=1e-12)
    assert np.linalg.eigvalsh(cov).min() >= -1e-12  # positive semi-definite
    flat = cov.reshape(36)
    assert flat[0] > 0 and flat[7] > 0 and flat[35] > 0 and flat[1] == flat[6]
    assert all(np.isfinite(flat[i]) for i in AMCL_ENTRIES)
    truth = np.asarray(frames[pose["stamp_ns"]]["T_map_base"])
    metres, degrees = _error(_matrix(pose["position"], pose["quaternion"]), truth)
    assert metres < 0.05 and degrees < 1.0, (metres, degrees)
    assert np.sqrt(flat[0]) < 0.25 and np.sqrt(flat[7]) < 0.25  # a confident fix, as configured


def test_node_relocalises_on_request_and_trigger_with_map_to_odom_on_tf(netns_ok, tmp_path):
    run = scenario_runner(HERE / "relocalization_scenarios.py", tmp_path)
    r = run("kidnapped", timeout=55.0)
    logs = r["_logs"]
    assert r["alive"] == [True, True] and r["rc"] == [0, 0], logs
    assert all(all(s) for s in r["settled"]), logs
    # on_demand (/a): nothing before the request, exactly one fix after it, one more after the trigger.
    assert r["counts_before_request"][0] == 0, logs
    assert r["relocalize"][0] is True and "map loaded" in r["relocalize"][1] and "pending" in r["relocalize"][1]
    assert r["counts_after_request"][0] == 1 and r["counts_after_trigger"][0] == 2, logs
    # once (/b, the nav2 preset: its pose on initialpose): the first fix after start, and no other.
    assert ["global_pose", "initialpose"] in r["launch_b"]["remappings"]
    assert r["counts_before_request"][1] == 1 and r["counts_after_trigger"][1] == 1, logs
    frames = {f["stamp_ns"]: f for f in r["frames"]}
    for pose in r["poses"]["a"] + r["poses"]["b"]:
        _check_like_amcl(pose, frames)
    first_round = {f["stamp_ns"] for f in r["frames"][:3]}
    assert r["poses"]["b"][0]["stamp_ns"] in first_round
    assert all(p["stamp_ns"] not in first_round for p in r["poses"]["a"])
    # map -> odom on /tf with each fix of /a: T_map_odom = T_map_base * T_odom_base^-1 (the truth's).
    tf = [t for t in r["poses"]["tf"] if t["parent"] == "map"]
    assert {t["child"] for t in tf} == {"odom"} and len(tf) == 2, r["poses"]["tf"]
    for t, pose in zip(tf, r["poses"]["a"]):
        assert t["stamp_ns"] == pose["stamp_ns"]
        f = frames[t["stamp_ns"]]
        truth = np.asarray(f["T_map_base"]) @ np.linalg.inv(np.asarray(f["T_odom_base"]))
        # the kidnapped odom frame is neither the map frame nor the base frame
        assert not np.allclose(truth, np.eye(4), atol=0.1) and not np.allclose(truth, f["T_map_base"], atol=0.1)
        metres, degrees = _error(_matrix(t["translation"], t["quaternion"]), truth)
        assert metres < 0.05 and degrees < 1.0, (metres, degrees)
    diag = r["diag"]["a"]
    assert diag["relocalization.base_from_camera"] == "parameter" and diag["relocalization.tf"] == "topic"
    assert diag["relocalization.published"] == "2" and diag["relocalization.requests"] == "1"
    assert diag["relocalization.triggers"] == "1" and diag["relocalization.pending"] == "false"
    assert "relocalization.refused.disagreement" in diag
    assert r["diag"]["b"]["relocalization.mode"] == "once" and r["diag"]["b"]["relocalization.tf"] == "off"


# -- without DDS ------------------------------------------------------------------------------------
def test_fix_to_msg_carries_the_full_covariance_in_ros_order():
    T = _matrix([1.0, 2.0, 0.5], Rotation.from_euler("z", 30, degrees=True).as_quat())
    cov = np.diag([0.01, 0.02, 0.03, 0.001, 0.002, 0.004])
    cov[0, 1] = cov[1, 0] = 0.005
    msg = fix_to_msg(Fix(12_000_000_007, "map", "base_link", T, cov, ("r/s/1",), (40,), "metric", "candidates"))
    assert msg.header.frame_id == "map" and (msg.header.stamp.sec, msg.header.stamp.nanosec) == (12, 7)
    p, q = msg.pose.pose.position, msg.pose.pose.orientation
    assert np.allclose(_matrix([p.x, p.y, p.z], [q.x, q.y, q.z, q.w]), T)
    flat = list(msg.pose.covariance)
    assert [flat[i] for i in AMCL_ENTRIES] == [0.01, 0.005, 0.005, 0.02, 0.004]


def test_transforms_round_trip():
    T = _matrix([0.2, -0.1, 0.4], Rotation.from_euler("xyz", [10, -20, 95], degrees=True).as_quat())
    t = matrix_to_transform(T, "map", "odom", 5)
    assert (t.header.frame_id, t.child_frame_id) == ("map", "odom")
    assert np.allclose(transform_to_matrix(t.transform), T)
    assert isinstance(t.transform, Transform)


def _mount(lookup, frames: FramesConfig | None = None) -> tuple[CameraMount, list[str]]:
    warnings: list[str] = []
    mount = CameraMount(frames or FramesConfig(base_from_camera=base_from_camera_param()), lookup,
                        logging.getLogger("test").info, lambda key, text: warnings.append(text), wait_sec=0.0)
    return mount, warnings


def test_camera_mount_parameter_path_without_tf():
    mount, _ = _mount(None)
    mount.saw_image("camera_optical")
    assert np.allclose(mount.base_from_camera(), BASE_FROM_CAMERA) and mount.source == "parameter"


def test_camera_mount_takes_tf_once_per_camera_frame_and_falls_back_with_a_reason():
    # A stand-in for tf2_ros's lookup (tf2_ros is not installable here): base_link <- cam_ok only.
    calls = []
    T_tf = _matrix([0.1, 0.0, 0.3], Rotation.from_euler("z", 90, degrees=True).as_quat())

    def lookup(base, camera, wait_sec):
        calls.append((base, camera))
        if camera != "cam_ok":
            raise LookupError(f"{camera} does not exist")
        return T_tf

    mount, warnings = _mount(lookup)
    for _ in range(3):
        mount.saw_image("cam_ok")
        assert np.allclose(mount.base_from_camera(), T_tf) and mount.source == "tf"
    assert calls == [("base_link", "cam_ok")]  # a camera does not move on the robot: looked up once
    mount.saw_image("cam_missing")
    assert np.allclose(mount.base_from_camera(), BASE_FROM_CAMERA) and mount.source == "parameter"
    mount.saw_image("")
    assert np.allclose(mount.base_from_camera(), BASE_FROM_CAMERA)
    assert "base_link <- cam_missing" in warnings[0] and "frames.base_from_camera" in warnings[0]
    assert "no header.frame_id" in warnings[1]


def test_base_frame_inputs_put_the_camera_at_its_pose_on_the_robot():
    mount, _ = _mount(None)
    settings = settings_from_flat({"camera_info.enabled": True})
    inputs = BaseFrameInputs(settings, lambda key, n=1: None, lambda key, text: None, mount=mount)
    info = CameraInfo(width=64, height=48, distortion_model="plumb_bob", k=[50.0, 0, 32, 0, 50, 24, 0, 0, 1],
                      d=[0.0] * 5)
    inputs.on_camera_info(info)
    camera = inputs.frame_inputs(1, (48, 64))["camera"]
    assert np.allclose(camera.T_body_cam, BASE_FROM_CAMERA)  # relative poses become base-frame poses
    identity, _ = _mount(None, FramesConfig())
    plain = BaseFrameInputs(settings, lambda key, n=1: None, lambda key, text: None, mount=identity)
    plain.on_camera_info(info)
    assert np.allclose(plain.frame_inputs(1, (48, 64))["camera"].T_body_cam, np.eye(4))


def test_bag_player_maps_types_and_refuses_a_folder_that_is_not_a_bag(tmp_path, capsys):
    from sensor_msgs.msg import Image

    from vpr_ros.nodes.bag_player import main, message_class
    assert message_class("sensor_msgs/msg/Image") is Image and message_class("no_such_pkg/msg/X") is None
    assert main([str(tmp_path)]) == 2 and "no metadata.yaml" in capsys.readouterr().err
