"""Geometry inputs of the node without DDS: CameraInfo -> calibration and rig, stamp sync, counters."""

from __future__ import annotations

import collections
import time
import types

import numpy as np
import pytest

pytest.importorskip("vpr_ros_msgs.msg", reason="vpr_ros_msgs is not built; run scripts/build_msgs.sh")

from sensor_msgs.msg import CameraInfo, Image  # noqa: E402

from vpr_ros.core.detector import StepResult  # noqa: E402
from vpr_ros.core.errors import ConfigError  # noqa: E402
from vpr_ros.core.types import LoopClosure  # noqa: E402
from vpr_ros.nodes.conversions import ns_to_stamp, rgb_to_image_msg  # noqa: E402
from vpr_ros.nodes.geometry_inputs import (GEOMETRY_INPUT_COUNTERS, GeometryInputs, StampBuffer,  # noqa: E402
                                           camera_from_msg, stereo_rig_from_msgs)
from vpr_ros.nodes.settings import settings_from_flat  # noqa: E402
from vpr_ros.nodes.stats import NodeStats  # noqa: E402

from euroc_stream import load_euroc, stereo_camera_infos  # noqa: E402

H, W = 48, 64
MS = 1_000_000


@pytest.fixture(scope="module")
def euroc():
    return load_euroc()


def test_raw_stereo_camera_infos_give_back_the_extrinsic_they_were_made_from(euroc):
    left_msg, right_msg = stereo_camera_infos(euroc["rig"])
    left, right = camera_from_msg(left_msg, False), camera_from_msg(right_msg, False)
    rig = stereo_rig_from_msgs(left, left_msg, right, right_msg, rectified=False)
    # R1 != R2 != I for EuRoC: a rig read from the right P alone would be off by ~0.8 deg.
    np.testing.assert_allclose(rig.T_left_right, euroc["rig"].T_left_right, atol=1e-9)
    np.testing.assert_allclose(left.D[:4], euroc["left"].D)


def test_rectified_camera_infos_use_p_without_distortion(euroc):
    left_msg, right_msg = stereo_camera_infos(euroc["rig"])
    left, right = camera_from_msg(left_msg, True), camera_from_msg(right_msg, True)
    rig = stereo_rig_from_msgs(left, left_msg, right, right_msg, rectified=True)
    np.testing.assert_allclose(left.K, np.reshape(left_msg.p, (3, 4))[:, :3])
    assert left.D.size == 0
    np.testing.assert_allclose(rig.T_left_right[:3, :3], np.eye(3))
    assert rig.baseline_m == pytest.approx(euroc["rig"].baseline_m, abs=1e-9)


def test_stamp_buffer_takes_the_nearest_within_tolerance_and_drops_older():
    buf: StampBuffer[str] = StampBuffer(3)
    for stamp in (10, 20, 30, 40):  # bounded: 10 falls out
        buf.add(stamp * MS, f"m{stamp}")
    assert len(buf) == 3
    assert buf.take(10 * MS, 2 * MS) is None
    assert buf.take(31 * MS, 2 * MS) == "m30"
    assert len(buf) == 1 and buf.take(20 * MS, 100 * MS) == "m40"  # 20 went with 30


def _info(stamp_ns: int = 0, k: float = 50.0, baseline_m: float = 0.0) -> CameraInfo:
    msg = CameraInfo(width=W, height=H, distortion_model="plumb_bob")
    msg.header.stamp = ns_to_stamp(stamp_ns)
    msg.k = [k, 0.0, W / 2, 0.0, k, H / 2, 0.0, 0.0, 1.0]
    msg.p = [k, 0.0, W / 2, -k * baseline_m, 0.0, k, H / 2, 0.0, 0.0, 0.0, 1.0, 0.0]  # left: 0, right: -fx b
    msg.r = [0.0] * 9  # a monocular driver's "no rectification"
    return msg


def _depth(stamp_ns: int, mm: np.ndarray) -> Image:
    msg = Image(height=mm.shape[0], width=mm.shape[1], encoding="16UC1", is_bigendian=0, step=mm.shape[1] * 2)
    msg.header.stamp = ns_to_stamp(stamp_ns)
    msg.data = mm.astype("<u2").tobytes()
    return msg


def _inputs(**params):
    counts: collections.Counter[str] = collections.Counter()
    settings = settings_from_flat({"camera_info.enabled": True, "sync.max_wait_sec": 0.05, **params})
    return GeometryInputs(settings, lambda key, n=1: counts.update({key: n}), lambda key, text: None), counts


def test_depth_is_matched_by_stamp_and_a_missing_or_bad_partner_is_counted():
    inputs, counts = _inputs(**{"depth.enabled": True, "sync.tolerance_sec": 0.002})
    assert inputs.frame_inputs(0, (H, W)) == {} and counts["camera_info_missing"] == 1
    inputs.on_camera_info(_info())
    mm = np.full((H, W), 1500, np.uint16)
    inputs.on_depth(_depth(1000 * MS, mm))
    inputs.on_depth(_depth(1100 * MS, mm * 2))
    out = inputs.frame_inputs(1101 * MS, (H, W))  # within 2 ms of the second
    assert out["camera"].K[0, 0] == 50.0 and out["depth"].dtype == np.uint16 and out["depth"][0, 0] == 3000
    t0 = time.monotonic()
    out = inputs.frame_inputs(1200 * MS, (H, W))  # nothing within tolerance: waits, then goes on
    assert out["depth"] is None and counts["depth_missing"] == 1 and time.monotonic() - t0 >= 0.04
    inputs.on_depth(_depth(1300 * MS, np.ones((H // 2, W), np.uint16)))
    assert inputs.frame_inputs(1300 * MS, (H, W))["depth"] is None and counts["depth_unusable"] == 1
    assert counts["depth_received"] == 3


def test_uncalibrated_camera_info_gives_no_camera_and_is_counted():
    inputs, counts = _inputs()
    inputs.on_camera_info(_info(k=0.0))  # drivers without a calibration publish K = 0
    assert inputs.frame_inputs(0, (H, W)) == {} and counts["camera_info_unusable"] == 1
    assert inputs.camera_size == (H, W)


def test_right_image_needs_its_camera_info_and_then_gives_a_stereo_frame():
    inputs, counts = _inputs(**{"stereo.enabled": True, "camera_info.rectified": True})
    inputs.on_camera_info(_info())
    image = np.zeros((H, W, 3), np.uint8)
    inputs.on_right_image(rgb_to_image_msg(image, 5 * MS))
    out = inputs.frame_inputs(5 * MS, (H, W))
    assert out["right"] is None and out["stereo"] is None and counts["right_unusable"] == 1
    inputs.on_right_camera_info(_info(baseline_m=0.1))
    inputs.on_right_image(rgb_to_image_msg(image, 6 * MS))
    out = inputs.frame_inputs(6 * MS, (H, W))
    assert out["right"].shape == (H, W, 3) and out["stereo"].baseline_m == pytest.approx(0.1)


@pytest.mark.parametrize("needs", ["depth", "stereo"])
def test_depth_or_stereo_without_camera_info_is_refused_at_startup(needs):
    with pytest.raises(ConfigError, match=f"{needs}.enabled needs camera_info.enabled"):
        settings_from_flat({f"{needs}.enabled": True})


def test_diagnostics_count_valid_poses_and_rejections_by_reason():
    stats = NodeStats(GEOMETRY_INPUT_COUNTERS)
    valid = LoopClosure(1, 1, "r", "s", 0, 0, "r", "s", 0.9, 0, "mnn", 50, 100, 40, 50.0, 1, "m", 8,
                        relative_pose=np.eye(4), covariance=np.eye(6))
    stats.geometry(StepResult(1, None, None, [], [valid], {}))
    stats.geometry(StepResult(2, None, None, [], [], {}, geometry_rejection="too_few_inliers"))
    values = {kv.key: kv.value for kv in stats.to_msg(ns_to_stamp(0), "n", "r", {}).status[0].values}
    assert values["geometry.valid"] == "1" and values["geometry.rejected.too_few_inliers"] == "1"
    assert values["geometry.rejected.low_parallax"] == "0" and values["depth_missing"] == "0"
    # The odometry gate's field (another branch adds StepResult.odometry_rejected) is counted too.
    assert values["odometry_gate.rejected"] == "0"
    stats.geometry(types.SimpleNamespace(loop_closures=[], geometry_rejection=None, odometry_rejected=3))
    assert stats.counters["odometry_gate.rejected"] == 3
