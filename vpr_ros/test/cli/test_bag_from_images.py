"""``vpr-ros bag from-images``: real Corridor JPEGs and the real EuRoC frames, calibration and ground-truth
poses into a bag, read back with rosbags (a separate reader) and replayed end to end."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
from rosbags.highlevel import AnyReader
from rosbags.typesys import Stores, get_typestore

from conftest import CORRIDOR
from own_data import COMMON, N, RATE, corridor_folder, write_kitti, write_tum
from vpr_ros.cli.bench.geometry import EUROC_DIR
from vpr_ros.cli.main import main
from vpr_ros.core.geometry.camera import load_camera
from vpr_ros.io.poses import pose_matrix

NS = 10**9


def _read(bag):
    with AnyReader([bag], default_typestore=get_typestore(Stores.ROS2_JAZZY)) as r:
        return [(c.topic, c.msgtype, t, r.deserialize(raw, c.msgtype)) for c, t, raw in r.messages()]


def _stamp(msg) -> int:
    return msg.header.stamp.sec * NS + msg.header.stamp.nanosec


def test_jpegs_become_a_compressed_bag_in_natural_order(tmp_path, capsys):
    folder = corridor_folder(tmp_path / "images")
    (folder / "notes.txt").write_text("not an image")  # other files are skipped
    tum = write_tum(tmp_path / "poses.txt", start=100.0)
    assert main(["bag", "from-images", str(folder), "--out", str(tmp_path / "bag"), "--rate", str(RATE),
                 "--poses", str(tum)]) == 0
    out = capsys.readouterr().out
    assert f"{2 * N} images" in out and "replay it: vpr-ros replay" in out and "--odom-topic /odom" in out
    msgs = _read(tmp_path / "bag")
    images = [m for topic, _, _, m in msgs if topic == "/camera/image_raw"]
    # natural order: frame_2 before frame_10; the original JPEG bytes, untouched
    assert [bytes(m.data) for m in images] == [(folder / f"frame_{k}.jpg").read_bytes() for k in range(2 * N)]
    assert all(m.format == "jpeg" for m in images)
    # TUM start: the first pose's stamp; then start + k / rate
    assert [_stamp(m) for m in images] == [100 * NS + k * NS // 2 for k in range(2 * N)]
    odom = [m for topic, _, _, m in msgs if topic == "/odom"]
    assert [_stamp(m) for m in odom] == [_stamp(m) for m in images]  # TUM: at the file's own stamps
    assert [m.pose.pose.position.x for m in odom] == [float(k % N) for k in range(2 * N)]


def test_the_bag_replays_end_to_end_with_the_default_model(tmp_path, capsys):
    folder = corridor_folder(tmp_path / "images")
    assert main(["bag", "from-images", str(folder), "--out", str(tmp_path / "bag"), "--rate", str(RATE),
                 "--poses", str(write_tum(tmp_path / "poses.txt"))]) == 0
    assert main(["replay", str(tmp_path / "bag"), *COMMON, "--odom-topic", "/odom", "--gt-radius-m", "1.5",
                 "--out", str(tmp_path / "out")]) == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["model_id"].startswith("lite0-gem@") and metrics["num_frames"] == 2 * N
    assert metrics["true_positives"] >= 3 and metrics["precision"] >= 0.8, metrics
    assert metrics["queries_with_true_loop"] >= N - 1


def test_raw_bag_with_camera_info_and_kitti_poses_from_euroc(tmp_path):
    folder = tmp_path / "euroc"
    folder.mkdir()
    for k in range(4):
        shutil.copyfile(EUROC_DIR / f"left_img_{k}.png", folder / f"left_img_{k}.png")
    rows = [line.split(",") for line in (EUROC_DIR / "gt_poses.csv").read_text().splitlines()[1:]]
    kitti = tmp_path / "poses.kitti"
    with kitti.open("w") as f:
        for row in rows:
            qw, qx, qy, qz, x, y, z = (float(v) for v in row[3:])
            f.write(" ".join(f"{v:.9g}" for v in pose_matrix((x, y, z), (qx, qy, qz, qw))[:3].reshape(-1)) + "\n")
    assert main(["bag", "from-images", str(folder), "--out", str(tmp_path / "bag"), "--raw", "--rate", "20",
                 "--start", "5", "--topic", "/cam0/image_raw", "--camera-info", str(EUROC_DIR / "sensorLeft.yaml"),
                 "--poses", str(kitti)]) == 0
    msgs = _read(tmp_path / "bag")
    by_topic = {}
    for topic, msgtype, _, m in msgs:
        by_topic.setdefault((topic, msgtype), []).append(m)
    images = by_topic[("/cam0/image_raw", "sensor_msgs/msg/Image")]
    infos = by_topic[("/cam0/camera_info", "sensor_msgs/msg/CameraInfo")]
    odom = by_topic[("/odom", "nav_msgs/msg/Odometry")]
    stamps = [5 * NS + k * NS // 20 for k in range(4)]
    assert [_stamp(m) for m in images] == [_stamp(m) for m in infos] == [_stamp(m) for m in odom] == stamps
    grey = cv2.imread(str(EUROC_DIR / "left_img_1.png"), cv2.IMREAD_GRAYSCALE)
    m = images[1]
    assert (m.encoding, m.height, m.width, m.step) == ("rgb8", 480, 752, 752 * 3)
    assert np.array_equal(np.frombuffer(bytes(m.data), np.uint8).reshape(480, 752, 3)[:, :, 0], grey)
    cam = load_camera(EUROC_DIR / "sensorLeft.yaml")
    info = infos[0]
    assert (info.width, info.height, info.distortion_model) == (752, 480, "plumb_bob")
    assert np.allclose(info.k, cam.K.reshape(9)) and np.allclose(info.d, np.r_[cam.D, 0.0])
    assert np.allclose([odom[2].pose.pose.position.x, odom[2].pose.pose.position.z],
                       [float(rows[2][7]), float(rows[2][9])])


def _fails(capsys, *words):
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("vpr-ros bag: error:"), err
    for word in words:
        assert word in err, err


@pytest.mark.parametrize("case", ["empty", "unreadable", "mixed_raw", "kitti_count", "tum_apart", "exists"])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, case):
    folder = tmp_path / "images"
    folder.mkdir()
    for k in range(3):
        shutil.copyfile(CORRIDOR / "ref" / f"{k:07d}.jpg", folder / f"{k}.jpg")
    args = ["bag", "from-images", str(folder), "--out", str(tmp_path / "bag")]
    if case == "empty":
        args[2] = str(tmp_path / "nothing")
        (tmp_path / "nothing").mkdir()
        (tmp_path / "nothing" / "readme.txt").write_text("x")
        words = ["nothing", "no image"]
    elif case == "unreadable":
        (folder / "1.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
        words = ["1.jpg", "unreadable"]
    elif case == "mixed_raw":
        cv2.imwrite(str(folder / "9.png"), np.zeros((50, 60, 3), np.uint8))
        args.append("--raw")
        words = ["9.png", "60x50", "160x120"]
    elif case == "kitti_count":
        args += ["--poses", str(write_kitti(tmp_path / "p.txt"))]
        words = ["p.txt", f"{2 * N} KITTI poses for 3 images"]
    elif case == "tum_apart":
        args += ["--poses", str(write_tum(tmp_path / "p.txt", start=1000.0)), "--start", "0"]
        words = ["p.txt", "meet none of the image stamps"]
    else:
        (tmp_path / "bag").mkdir()
        words = ["bag", "already exists"]
    assert main(args) == 2
    _fails(capsys, *words)
    assert case == "exists" or not (tmp_path / "bag").exists()  # nothing half-written left behind
