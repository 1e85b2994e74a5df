"""``frames.base_from_camera`` reaches the replay's cameras (``replay_inputs.geometry_inputs``): the
left camera's body frame becomes the base frame, a stereo rig keeps its baseline, the identity keeps
the calibration as it was, and camera_info topics (no file to apply it to) are refused clearly."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from vpr_ros.cli.bench.geometry import EUROC_DIR
from vpr_ros.cli.replay_inputs import add_arguments, geometry_inputs
from vpr_ros.core.config import config_from_flat
from vpr_ros.core.errors import ConfigError
from vpr_ros.core.localization.map_pose import base_from_camera_matrix

MOUNT = "0.2 0.05 0.4 -0.5 0.5 -0.5 0.5"
LEFT, RIGHT = str(EUROC_DIR / "sensorLeft.yaml"), str(EUROC_DIR / "sensorRight.yaml")


def _args(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_arguments(p)
    return p.parse_args(list(argv))


def _frames(value: str | None = None):
    return config_from_flat({} if value is None else {"frames.base_from_camera": value}).frames


def test_the_left_camera_body_becomes_the_base_and_the_rig_keeps_its_baseline():
    argv = ("--camera-info", LEFT, "--right-image-topic", "/cam1", "--right-camera-info", RIGHT)
    plain = geometry_inputs(_args(*argv), _frames())
    assert not np.allclose(plain.camera.camera.T_body_cam, np.eye(4))  # EuRoC's T_BS: the IMU body
    moved = geometry_inputs(_args(*argv), _frames(MOUNT))
    B = base_from_camera_matrix(_frames(MOUNT))
    np.testing.assert_allclose(moved.camera.camera.T_body_cam, B)
    rig = [np.linalg.inv(i.camera.camera.T_body_cam) @ i.right_camera.camera.T_body_cam for i in (plain, moved)]
    np.testing.assert_allclose(rig[1], rig[0], atol=1e-12)  # the right camera in the left one: unchanged
    np.testing.assert_allclose(moved.camera.camera.K, plain.camera.camera.K)


def test_the_identity_keeps_the_calibration_and_topics_are_refused_with_a_mount():
    args = _args("--camera-info", LEFT)
    kept = geometry_inputs(args, _frames())
    np.testing.assert_allclose(kept.camera.camera.T_body_cam, geometry_inputs(args).camera.camera.T_body_cam)
    assert geometry_inputs(_args("--camera-info-topic", "/cam0/info"), _frames()).camera_info_topic == "/cam0/info"
    with pytest.raises(ConfigError, match="frames.base_from_camera.*--camera-info FILE"):
        geometry_inputs(_args("--camera-info-topic", "/cam0/info"), _frames(MOUNT))
