"""``vpr-ros replay`` with geometry inputs: the real EuRoC stereo revisit in a real bag, the default model.

The bag carries what a ROS stereo driver records: raw left/right mono8 images and both CameraInfo
messages (K, D, and R/P of the stereo rectification computed from EuRoC's calibration). Poses come
out in the left camera frame (CameraInfo has no body extrinsics) and are checked against EuRoC's
ground truth carried into that frame. Plus the stamp pairing of depth / right images on small bags.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from vpr_ros.cli.bench.geometry import EUROC_DIR, direction_error_deg, load_euroc, rotation_error_deg
from vpr_ros.cli.main import main
from vpr_ros.core.geometry.camera import load_camera
from vpr_ros.core.errors import BagError, ConfigError
from vpr_ros.io.bags import ImageBag
from vpr_ros.io.calibration import load_calibration, stereo_rig
from vpr_ros.io.frame_sync import GeometryInputs
from vpr_ros.io.msgdefs import typestore
from vpr_ros.io.poses import pose_matrix

NS = 10**9
T0 = 1403715386762142976  # EuRoC stamp of left_img_0; left_img_1 is replayed 98.45 s after it (the real gap)
STAMPS = {0: T0, 1: T0 + 98_450_000_000}
RIGHT_DELAY_NS = 2_000_000  # right stamps 2 ms late: paired by the sync tolerance, not by equality
TOPICS = ["--image-topic", "/cam0/image_raw", "--no-progress",
          "--set", "verify.temporal_consistency=1", "--set", "detector.min_loop_gap_sec=1.0"]
STEREO = ["--camera-info-topic", "/cam0/camera_info", "--right-image-topic", "/cam1/image_raw",
          "--right-camera-info-topic", "/cam1/camera_info"]


def _grey(name: str) -> np.ndarray:
    return cv2.imread(str(EUROC_DIR / f"{name}.png"), cv2.IMREAD_GRAYSCALE)


def _stereo_infos() -> tuple[dict, dict]:
    """CameraInfo fields of both EuRoC cameras as a ROS stereo calibration gives them (R, P rectify)."""
    left, right = load_camera(EUROC_DIR / "sensorLeft.yaml"), load_camera(EUROC_DIR / "sensorRight.yaml")
    T_right_left = np.linalg.inv(right.T_body_cam) @ left.T_body_cam  # x_right = R x_left + t
    D1, D2 = np.r_[left.D, 0.0], np.r_[right.D, 0.0]  # plumb_bob has five coefficients
    R1, R2, P1, P2, *_ = cv2.stereoRectify(left.K, D1, right.K, D2, (752, 480), np.ascontiguousarray(
        T_right_left[:3, :3]), T_right_left[:3, 3].reshape(3, 1).copy(), flags=cv2.CALIB_ZERO_DISPARITY, alpha=0)
    return ({"K": left.K, "D": D1, "R": R1, "P": P1}, {"K": right.K, "D": D2, "R": R2, "P": P2})


def _camera_info(types, stamp_ns: int, cal: dict):
    return types["sensor_msgs/msg/CameraInfo"](
        header=_header(types, stamp_ns, "cam"), height=480, width=752, distortion_model="plumb_bob",
        d=np.asarray(cal["D"], np.float64), k=cal["K"].reshape(9), r=cal["R"].reshape(9), p=cal["P"].reshape(12),
        binning_x=0, binning_y=0, roi=types["sensor_msgs/msg/RegionOfInterest"](
            x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))


def _header(types, stamp_ns: int, frame_id: str):
    t = types["builtin_interfaces/msg/Time"](sec=stamp_ns // NS, nanosec=stamp_ns % NS)
    return types["std_msgs/msg/Header"](stamp=t, frame_id=frame_id)


def _image(types, stamp_ns: int, array: np.ndarray, encoding: str):
    step = array.shape[1] * array.dtype.itemsize
    return types["sensor_msgs/msg/Image"](header=_header(types, stamp_ns, "cam"), height=array.shape[0],
                                          width=array.shape[1], encoding=encoding, is_bigendian=0, step=step,
                                          data=np.frombuffer(array.tobytes(), np.uint8))


def write_bag(path: Path, messages: list[tuple[str, str, int, object]]) -> Path:
    """A rosbag2 (mcap) of (topic, type, bag time, message); topics in order of first use."""
    store = typestore()
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conns = {}
        for topic, msgtype, bag_ns, msg in messages:
            if topic not in conns:
                conns[topic] = writer.add_connection(topic, msgtype, typestore=store)
            writer.write(conns[topic], bag_ns, store.serialize_cdr(msg, msgtype))
    return path


def euroc_bag(path: Path, frames: tuple[int, ...]) -> Path:
    types = typestore().types
    cal0, cal1 = _stereo_infos()
    msgs = []
    for i in frames:
        t = STAMPS[i]
        # The right image is recorded before the left one: the reader must wait, not pair by bag order.
        msgs += [("/cam1/image_raw", "sensor_msgs/msg/Image", t, _image(types, t + RIGHT_DELAY_NS,
                                                                        _grey(f"right_img_{i}"), "mono8")),
                 ("/cam0/image_raw", "sensor_msgs/msg/Image", t + 1, _image(types, t, _grey(f"left_img_{i}"), "mono8")),
                 ("/cam0/camera_info", "sensor_msgs/msg/CameraInfo", t + 2, _camera_info(types, t, cal0)),
                 ("/cam1/camera_info", "sensor_msgs/msg/CameraInfo", t + 3, _camera_info(types, t, cal1))]
    return write_bag(path, msgs)


@pytest.fixture(scope="module")
def truth_cam() -> np.ndarray:
    """Ground-truth T_match_query of the left camera (query left_img_1, match left_img_0)."""
    e = load_euroc()
    T_bc = e["left"].T_body_cam
    return np.linalg.inv(T_bc) @ np.linalg.inv(e["gt"]["left_img_0"]) @ e["gt"]["left_img_1"] @ T_bc


def _csv_pose(row: dict) -> np.ndarray:
    return pose_matrix(tuple(float(row[k]) for k in ("t_x", "t_y", "t_z")),
                       tuple(float(row[k]) for k in ("q_x", "q_y", "q_z", "q_w")))


def _bag_messages(path: Path) -> list:
    with AnyReader([path], default_typestore=get_typestore(Stores.EMPTY)) as reader:
        return [reader.deserialize(raw, c.msgtype) for c, _, raw in reader.messages()]


@pytest.fixture(scope="module")
def truth_body() -> np.ndarray:
    e = load_euroc()
    return np.linalg.inv(e["gt"]["left_img_0"]) @ e["gt"]["left_img_1"]


FILES = ["--camera-info", str(EUROC_DIR / "sensorLeft.yaml"), "--right-image-topic", "/cam1/image_raw",
         "--right-camera-info", str(EUROC_DIR / "sensorRight.yaml")]


@pytest.mark.parametrize("calibration", ["camera_info topics", "EuRoC files"])
def test_stereo_bag_gives_metric_loop_poses_within_the_goals(tmp_path, truth_cam, truth_body, capsys, calibration):
    # CameraInfo (R/P baseline) gives left-camera poses; EuRoC's T_BS (extrinsics baseline) body poses.
    options, truth = (STEREO, truth_cam) if calibration == "camera_info topics" else (FILES, truth_body)
    bag = euroc_bag(tmp_path / "euroc", (0, 1))
    assert main(["replay", str(bag), *TOPICS, *options, "--out", str(tmp_path / "out")]) == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["num_loop_closures"] == 1
    assert metrics["geometry_valid"] == metrics["geometry_valid_metric"] == 1
    assert metrics["geometry_methods"] == {"pnp": 1} and metrics["geometry_rejected"] == {}
    assert metrics["frames_without_right"] == 0
    (row,) = list(csv.DictReader(open(tmp_path / "out" / "loop_closures.csv")))
    assert row["relative_pose_valid"] == "1" and row["translation_scale_known"] == "1"
    assert row["geometry_method"] == "pnp" and int(row["geometric_inliers"]) >= 100
    pose = _csv_pose(row)
    assert rotation_error_deg(pose, truth) < 2.0
    assert np.linalg.norm(pose[:3, 3] - truth[:3, 3]) < 0.10
    assert 0 < float(row["std_x_m"]) < 0.02 and 0 < float(row["std_rot_z_deg"]) < 0.5
    (msg,) = _bag_messages(tmp_path / "out" / "loop_closures")
    assert msg.relative_pose_valid and msg.translation_scale_known
    p = msg.relative_pose.pose.position
    np.testing.assert_allclose([p.x, p.y, p.z], pose[:3, 3], atol=1e-5)
    assert "1 loops with a measured relative pose (1 metric)" in capsys.readouterr().out


def test_a_saved_map_keeps_the_geometry_for_the_next_replay(tmp_path, truth_cam):
    common = [*TOPICS, *STEREO]
    assert main(["replay", str(euroc_bag(tmp_path / "first", (0,))), *common, "--map-save", str(tmp_path / "map"),
                 "--out", str(tmp_path / "out1")]) == 0
    assert main(["replay", str(euroc_bag(tmp_path / "revisit", (1,))), *common, "--map-load", str(tmp_path / "map"),
                 "--out", str(tmp_path / "out2")]) == 0
    metrics = json.loads((tmp_path / "out2" / "metrics.json").read_text())
    assert metrics["num_map_keyframes"] == 1 and metrics["num_loop_closures"] == 1
    # Before the map kept geometry, this loop against the loaded keyframe had no pose.
    assert metrics["geometry_valid_metric"] == 1
    (row,) = list(csv.DictReader(open(tmp_path / "out2" / "loop_closures.csv")))
    pose = _csv_pose(row)
    assert rotation_error_deg(pose, truth_cam) < 2.0 and np.linalg.norm(pose[:3, 3] - truth_cam[:3, 3]) < 0.10


def test_monocular_calibration_file_gives_rotation_and_a_unit_direction(tmp_path, truth_cam):
    left = load_camera(EUROC_DIR / "sensorLeft.yaml")
    calib = {"image_width": 752, "image_height": 480, "camera_name": "cam0",
             "camera_matrix": {"rows": 3, "cols": 3, "data": left.K.reshape(-1).tolist()},
             "distortion_model": "plumb_bob",
             "distortion_coefficients": {"rows": 1, "cols": 5, "data": [*left.D.tolist(), 0.0]},
             "rectification_matrix": {"rows": 3, "cols": 3, "data": np.eye(3).reshape(-1).tolist()},
             "projection_matrix": {"rows": 3, "cols": 4, "data": np.c_[left.K, np.zeros(3)].reshape(-1).tolist()}}
    (tmp_path / "cam0.yaml").write_text(yaml.safe_dump(calib))
    bag = euroc_bag(tmp_path / "euroc", (0, 1))
    assert main(["replay", str(bag), *TOPICS, "--camera-info", str(tmp_path / "cam0.yaml"),
                 "--out", str(tmp_path / "out")]) == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["geometry_valid"] == 1 and metrics["geometry_valid_metric"] == 0
    (row,) = list(csv.DictReader(open(tmp_path / "out" / "loop_closures.csv")))
    assert row["relative_pose_valid"] == "1" and row["translation_scale_known"] == "0"
    assert row["geometry_method"] == "essential"
    pose = _csv_pose(row)
    assert rotation_error_deg(pose, truth_cam) < 3.0
    assert direction_error_deg(pose[:3, 3], truth_cam[:3, 3]) < 15.0
    assert np.linalg.norm(pose[:3, 3]) == pytest.approx(1.0, abs=1e-5)
    (msg,) = _bag_messages(tmp_path / "out" / "loop_closures")
    assert msg.relative_pose_valid and not msg.translation_scale_known
    assert (msg.geometry_method, msg.geometry_rejection) == ("essential", "")


@pytest.mark.parametrize("on_invalid, published", [("reject", 0), ("publish", 1)])
def test_loops_without_a_valid_pose_are_counted_by_reason(tmp_path, on_invalid, published):
    bag = euroc_bag(tmp_path / "euroc", (0, 1))
    assert main(["replay", str(bag), *TOPICS, *STEREO, "--set", "geometry.min_inlier_ratio=0.999",
                 "--set", f"geometry.on_invalid={on_invalid}", "--out", str(tmp_path / "out")]) == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["geometry_rejected"] == {"low_inlier_ratio": 1} and metrics["geometry_valid"] == 0
    assert metrics["num_loop_closures"] == published
    rows = list(csv.DictReader(open(tmp_path / "out" / "loop_closures.csv")))
    assert [(r["relative_pose_valid"], r["geometry_rejection"], r["t_x"]) for r in rows] == \
        [("0", "low_inlier_ratio", "")] * published
    # the message carries the reason too (issue 20: docs/geometry.md named a field it did not have)
    msgs = _bag_messages(tmp_path / "out" / "loop_closures") if published else []
    assert [(m.relative_pose_valid, m.geometry_method, m.geometry_rejection) for m in msgs] == \
        [(False, "pnp", "low_inlier_ratio")] * published


# -- the bag side alone: calibration from R/P, pairing by stamp, what is counted ---------------------

def test_stereo_extrinsics_are_recovered_from_camera_info_R_and_P(tmp_path):
    e = load_euroc()
    cal0, cal1 = _stereo_infos()
    types = typestore().types
    bag = write_bag(tmp_path / "b", [("/l", "sensor_msgs/msg/CameraInfo", 1, _camera_info(types, 1, cal0)),
                                     ("/r", "sensor_msgs/msg/CameraInfo", 2, _camera_info(types, 1, cal1))])
    from vpr_ros.io.calibration import calibration_from_camera_info
    with AnyReader([bag], default_typestore=typestore()) as reader:
        msgs = [reader.deserialize(raw, c.msgtype) for c, _, raw in reader.messages()]
    rig = stereo_rig(calibration_from_camera_info(msgs[0], False, "/l"),
                     calibration_from_camera_info(msgs[1], False, "/r"), rectified=False)
    np.testing.assert_allclose(rig.T_left_right, e["rig"].T_left_right, atol=1e-9)


def _depth_bag(path: Path, depth_offsets_ms: list[float], encoding: str = "16UC1") -> Path:
    types = typestore().types
    msgs = []
    for i, off in enumerate(depth_offsets_ms):
        t = (i + 1) * NS
        mm = 1000 + i  # frame i's depth says (1000 + i) mm everywhere
        depth = {"16UC1": np.full((480, 752), mm, np.uint16), "32FC1": np.full((480, 752), mm / 1000, np.float32),
                 "mono8": np.zeros((480, 752), np.uint8)}[encoding]
        msgs += [("/cam", "sensor_msgs/msg/Image", t, _image(types, t, _grey("left_img_0"), "mono8")),
                 ("/depth", "sensor_msgs/msg/Image", t + 5, _image(types, t + int(off * 1e6), depth, encoding))]
    return write_bag(path, msgs)


@pytest.mark.parametrize("encoding, unit", [("16UC1", 1), ("32FC1", 1000)])
def test_depth_is_paired_by_stamp_and_misses_are_counted(tmp_path, encoding, unit):
    # frame 0: depth 3 ms later (paired); frame 1: 50 ms later (beyond 5 ms: none); frame 2: 4 ms earlier.
    bag = _depth_bag(tmp_path / "b", [3, 50, -4], encoding)
    inputs = GeometryInputs(camera=load_calibration(EUROC_DIR / "sensorLeft.yaml"), depth_topic="/depth")
    with ImageBag(bag, "/cam", inputs=inputs) as reader:
        frames = list(reader)
        stats = reader.stats
    assert [f.depth is not None for f in frames] == [True, False, True]
    assert frames[0].depth.dtype == (np.uint16 if encoding == "16UC1" else np.float32)
    assert frames[0].depth[0, 0] * unit == pytest.approx(1000) and frames[2].depth[0, 0] * unit == pytest.approx(1002)
    assert stats.frames_without_depth == 1 and stats.images == 3
    assert all(f.camera is not None and f.camera.width == 752 and f.right is None for f in frames)


def test_zero_tolerance_pairs_equal_stamps_only_and_no_image_waits_forever(tmp_path):
    # Depth for frames 0 and 2 (frame 2's 1 ms off); frames 1 and 3 never get one, yet all frames come out.
    bag = _depth_bag(tmp_path / "b", [0, 3000, 1, 5000])
    inputs = GeometryInputs(camera=load_calibration(EUROC_DIR / "sensorLeft.yaml"), depth_topic="/depth",
                            sync_tolerance_sec=0.0)
    with ImageBag(bag, "/cam", inputs=inputs) as reader:
        frames = [(reader.message_index, f.depth is not None) for f in reader]
        assert reader.stats.frames_without_depth == 3
    assert frames == [(0, True), (1, False), (2, False), (3, False)]


def test_a_calibration_of_another_image_size_is_refused(tmp_path):
    (tmp_path / "vga.yaml").write_text(yaml.safe_dump({
        "image_width": 640, "image_height": 480, "distortion_model": "plumb_bob",
        "camera_matrix": {"rows": 3, "cols": 3, "data": [400.0, 0, 320, 0, 400, 240, 0, 0, 1]},
        "distortion_coefficients": {"rows": 1, "cols": 5, "data": [0.0] * 5}}))
    bag = _depth_bag(tmp_path / "b", [0])
    inputs = GeometryInputs(camera=load_calibration(tmp_path / "vga.yaml"), depth_topic="/depth")
    with ImageBag(bag, "/cam", inputs=inputs) as reader, \
            pytest.raises(ConfigError, match="for 640x480 images but image 0 of /cam is 752x480"):
        list(reader)


def test_a_depth_topic_in_another_encoding_is_refused(tmp_path):
    bag = _depth_bag(tmp_path / "b", [0], "mono8")
    inputs = GeometryInputs(camera=load_calibration(EUROC_DIR / "sensorLeft.yaml"), depth_topic="/depth")
    with ImageBag(bag, "/cam", inputs=inputs) as reader, pytest.raises(BagError, match="16UC1 .* or 32FC1"):
        list(reader)


def test_replay_options_are_checked_before_the_model_loads(tmp_path, capsys):
    bag = euroc_bag(tmp_path / "euroc", (0,))
    out = str(tmp_path / "out")
    assert main(["replay", str(bag), *TOPICS, "--depth-topic", "/d", "--out", out]) == 2
    assert "needs the calibration of the image topic" in capsys.readouterr().err
    assert main(["replay", str(bag), *TOPICS, "--camera-info", str(tmp_path / "nope.yaml"), "--out", out]) == 2
    assert "nope.yaml: no such file" in capsys.readouterr().err
    assert main(["replay", str(bag), *TOPICS, "--camera-info-topic", "/cam0/camera_info",
                 "--right-image-topic", "/cam1/image_raw", "--out", out]) == 2
    assert "needs the right camera's calibration" in capsys.readouterr().err
