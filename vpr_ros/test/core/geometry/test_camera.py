"""Camera calibration parsing (EuRoC/Kimera, ROS camera_calibration, CameraInfo) and undistortion."""

from pathlib import Path

import numpy as np
import pytest

from vpr_ros.core.geometry.camera import (PinholeCamera, camera_from_camera_info, load_camera, stereo_from_camera_infos,
                                 stereo_from_extrinsics)
from vpr_ros.core.errors import ConfigError, InputError
from vpr_ros.core.geometry.keyframe_geometry import depth_from_raw

EUROC = Path(__file__).resolve().parents[2] / "data" / "kimera_euroc"

ROS_YAML = """image_width: 640
image_height: 480
camera_name: narrow_stereo
camera_matrix:
  rows: 3
  cols: 3
  data: [500.0, 0.0, 320.5, 0.0, 502.0, 240.5, 0.0, 0.0, 1.0]
distortion_model: plumb_bob
distortion_coefficients:
  rows: 1
  cols: 5
  data: [-0.2, 0.05, 0.001, -0.001, 0.0]
rectification_matrix:
  rows: 3
  cols: 3
  data: [1, 0, 0, 0, 1, 0, 0, 0, 1]
projection_matrix:
  rows: 3
  cols: 4
  data: [480.0, 0.0, 318.0, 0.0, 0.0, 481.0, 241.0, 0.0, 0.0, 0.0, 1.0, 0.0]
"""


def test_euroc_sensor_yaml_gives_intrinsics_distortion_and_extrinsics():
    cam = load_camera(EUROC / "sensorLeft.yaml")
    assert (cam.width, cam.height) == (752, 480)
    np.testing.assert_allclose(cam.K, [[458.654, 0, 367.215], [0, 457.296, 248.375], [0, 0, 1]])
    np.testing.assert_allclose(cam.D, [-0.28340811, 0.07395907, 0.00019359, 1.76187114e-05])
    assert cam.distortion_model == "radial-tangential"
    assert cam.T_body_cam[0, 3] == pytest.approx(-0.0216401454975)
    np.testing.assert_allclose(cam.T_body_cam[:3, :3] @ cam.T_body_cam[:3, :3].T, np.eye(3), atol=1e-6)


def test_euroc_stereo_baseline_from_both_extrinsics():
    rig = stereo_from_extrinsics(load_camera(EUROC / "sensorLeft.yaml"), load_camera(EUROC / "sensorRight.yaml"))
    # The EuRoC MAV stereo baseline is 11 cm, the right camera along +x of the left one.
    assert rig.baseline_m == pytest.approx(0.110, abs=0.001)
    assert rig.T_left_right[0, 3] > 0.10


def test_ros_camera_calibration_yaml(tmp_path):
    path = tmp_path / "cam.yaml"
    path.write_text(ROS_YAML)
    cam = load_camera(path)
    assert cam.K[0, 0] == 500.0 and cam.K[1, 2] == 240.5 and cam.D.shape == (5,)
    rect = load_camera(path, rectified=True)
    assert rect.K[0, 0] == 480.0 and rect.D.size == 0


def test_undistort_inverts_project_with_distortion():
    cam = load_camera(EUROC / "sensorLeft.yaml")
    rng = np.random.default_rng(0)
    pts = np.column_stack([rng.uniform(-0.6, 0.6, 50), rng.uniform(-0.4, 0.4, 50), np.ones(50)])
    px = cam.project(pts)
    np.testing.assert_allclose(cam.undistort_points(px), pts[:, :2], atol=1e-5)
    # The distortion is strong near the border: ignoring it would be off by many pixels.
    assert np.abs(px - (pts[:, :2] @ cam.K[:2, :2].T + cam.K[:2, 2])).max() > 10


def test_camera_info_rectified_stereo_baseline_from_p():
    left = camera_from_camera_info([400, 0, 320, 0, 400, 240, 0, 0, 1], [], 640, 480,
                                   P=[400, 0, 320, 0, 0, 400, 240, 0, 0, 0, 1, 0], rectified=True)
    rig = stereo_from_camera_infos(left, [400, 0, 320, -400 * 0.12, 0, 400, 240, 0, 0, 0, 1, 0])
    assert rig.baseline_m == pytest.approx(0.12)
    with pytest.raises(ConfigError, match="baseline"):
        stereo_from_camera_infos(left, [400, 0, 320, 0, 0, 400, 240, 0, 0, 0, 1, 0])


def test_bad_calibrations_raise_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="focal"):
        PinholeCamera(np.zeros((3, 3)), np.zeros(0), 10, 10)
    with pytest.raises(ConfigError, match="distortion model"):
        PinholeCamera(np.eye(3), np.zeros(0), 10, 10, "double_sphere")
    path = tmp_path / "x.yaml"
    path.write_text("foo: 1\n")
    with pytest.raises(ConfigError, match="neither"):
        load_camera(path)


def test_depth_from_raw_16uc1_and_32fc1():
    mm = np.array([[1000, 0], [2500, 65535]], np.uint16)
    out = depth_from_raw("16UC1", 2, 2, 4, mm.tobytes())
    assert out.dtype == np.uint16 and out[1, 0] == 2500
    m = np.array([[1.5, np.nan]], np.float32)
    big = depth_from_raw("32FC1", 1, 2, 8, m.astype(">f4").tobytes(), is_bigendian=True)
    assert big.dtype == np.float32 and big[0, 0] == 1.5 and np.isnan(big[0, 1])
    with pytest.raises(InputError, match="16UC1"):
        depth_from_raw("rgb8", 1, 1, 3, b"abc")


def test_equidistant_round_trip():
    cam = PinholeCamera(np.array([[300.0, 0, 320], [0, 300, 240], [0, 0, 1]]), [0.1, -0.05, 0.01, -0.002],
                        640, 480, "equidistant")
    pts = np.array([[0.3, -0.2, 1.0], [-0.9, 0.5, 1.0], [0.0, 0.0, 1.0]])
    np.testing.assert_allclose(cam.undistort_points(cam.project(pts)), pts[:, :2], atol=1e-6)
