"""``frames.base_from_camera`` reaches the replay's cameras (``replay_inputs.geometry_inputs``): the
left camera's body frame becomes the base frame, a stereo rig keeps its baseline, the identity keeps
the calibration as it was, and calibrations read from camera_info topics are moved as they are read
(``io/frame_sync.FrameAssembler``)."""

from __future__ import annotations

import argparse
import types

import numpy as np
import pytest

from vpr_ros.cli.bench.geometry import EUROC_DIR
from vpr_ros.cli.replay_inputs import add_arguments, geometry_inputs
from vpr_ros.core.config import config_from_flat
from vpr_ros.core.errors import ConfigError
from vpr_ros.core.localization.map_pose import base_from_camera_matrix
from vpr_ros.core.types import Frame
from vpr_ros.io.frame_sync import CalibrationTrack, FrameAssembler

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


def test_the_identity_keeps_the_calibration():
    args = _args("--camera-info", LEFT)
    kept = geometry_inputs(args, _frames())
    np.testing.assert_allclose(kept.camera.camera.T_body_cam, geometry_inputs(args).camera.camera.T_body_cam)
    topic = geometry_inputs(_args("--camera-info-topic", "/cam0/info"), _frames())
    assert topic.camera_info_topic == "/cam0/info" and topic.T_base_cam is None


def _camera_info(width=64, height=48):
    return types.SimpleNamespace(k=[50.0, 0, 32, 0, 50.0, 24, 0, 0, 1], d=[0.0] * 5, r=[1.0, 0, 0, 0, 1, 0, 0, 0, 1],
                                 p=[50.0, 0, 32, 0, 0, 50.0, 24, 0, 0, 0, 1, 0], width=width, height=height,
                                 distortion_model="plumb_bob")


def test_camera_info_topics_are_moved_onto_the_base_as_they_are_read():
    inputs = geometry_inputs(_args("--camera-info-topic", "/cam0/info"), _frames(MOUNT))
    np.testing.assert_allclose(inputs.T_base_cam, base_from_camera_matrix(_frames(MOUNT)))
    track = CalibrationTrack("/cam0/info", rectified=False)
    track.add(0, _camera_info())
    assembler = FrameAssembler(inputs, track, None, decode_image=None, stats=None)
    frame = Frame(stamp_ns=5, image=np.zeros((48, 64, 3), np.uint8))
    first, second = (assembler.complete(frame, "image 5") for _ in range(2))
    np.testing.assert_allclose(first.camera.T_body_cam, inputs.T_base_cam)
    assert first.camera is second.camera  # moved once per calibration, not once per frame
    plain = geometry_inputs(_args("--camera-info-topic", "/cam0/info"), _frames())
    kept = FrameAssembler(plain, track, None, decode_image=None, stats=None).complete(frame, "image 5")
    np.testing.assert_allclose(kept.camera.T_body_cam, np.eye(4))


def test_a_stereo_pair_given_half_by_topic_half_by_file_is_refused_with_a_mount():
    argv = ("--camera-info-topic", "/cam0/info", "--right-image-topic", "/cam1", "--right-camera-info", RIGHT)
    with pytest.raises(ConfigError, match="both stereo calibrations the same way"):
        geometry_inputs(_args(*argv), _frames(MOUNT))
