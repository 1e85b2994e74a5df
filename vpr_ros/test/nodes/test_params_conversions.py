"""Parameter declarations and message conversions (real message classes, no DDS participant)."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, strategies as st

pytest.importorskip("vpr_ros_msgs.msg", reason="vpr_ros_msgs is not built; run scripts/build_msgs.sh")

from nav_msgs.msg import Odometry  # noqa: E402
from rcl_interfaces.msg import ParameterDescriptor  # noqa: E402
from rclpy.qos import ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402

from vpr_ros.core.config import flat_field_specs  # noqa: E402
from vpr_ros.core.errors import ConfigError, InputError  # noqa: E402
from vpr_ros.core.types import LoopClosure  # noqa: E402
from vpr_ros.nodes import conversions as conv  # noqa: E402
from vpr_ros.nodes.params import (MUTABLE_PARAMETERS, NODE_PARAMETERS, all_parameter_specs,  # noqa: E402
                                  image_qos, parameter_descriptor, parameter_table_markdown,
                                  settings_from_flat)


def test_every_config_field_is_declared_once_with_a_description():
    names = [s.name for s in all_parameter_specs()]
    assert len(names) == len(set(names))
    assert {s.name for s in flat_field_specs()} <= set(names)
    for spec in all_parameter_specs():
        d: ParameterDescriptor = parameter_descriptor(spec)
        assert len(d.description) > 15, spec.name
        assert d.read_only == (spec.name not in MUTABLE_PARAMETERS)
        if spec.choices:
            assert all(c in d.additional_constraints for c in spec.choices)
        if spec.type is float and spec.min is not None:
            assert d.floating_point_range[0].from_value == spec.min
            assert d.floating_point_range[0].to_value == (math.inf if spec.max is None else spec.max)
        if spec.type is int and spec.min is not None:
            assert d.integer_range[0].from_value == spec.min


def test_docs_parameter_table_is_generated_from_the_specs():
    doc = Path(__file__).resolve().parents[3] / "docs" / "ros2.md"
    table = parameter_table_markdown()
    assert table in doc.read_text(), "regenerate the table: python -m vpr_ros.nodes.params"
    assert table.count("\n") == len(all_parameter_specs()) + 2


def test_node_settings_validate_and_name_the_parameter():
    s = settings_from_flat({"qos.reliability": "reliable", "queue.size": 2, "diagnostics.period_sec": 1})
    assert s.qos_reliability == "reliable" and s.queue_size == 2 and s.diagnostics_period_sec == 1.0
    assert image_qos(s).reliability == ReliabilityPolicy.RELIABLE
    assert image_qos(settings_from_flat({})).reliability == ReliabilityPolicy.BEST_EFFORT
    for bad, name in [({"queue.size": 0}, "queue.size"), ({"qos.reliability": "x"}, "qos.reliability"),
                      ({"image.compressed": 1}, "image.compressed"), ({"extractor_factory": "nocolon"},
                                                                      "extractor_factory"),
                      ({"queue.sise": 3}, "queue.sise")]:
        with pytest.raises(ConfigError, match=name.replace(".", r"\.")):
            settings_from_flat(bad)
    assert {s.name for s in NODE_PARAMETERS}.isdisjoint({s.name for s in flat_field_specs()})


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "mono8", "bgra8"])
def test_image_msg_round_trip_with_padded_rows(encoding):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (5, 7, 3), dtype=np.uint8)
    msg = conv.rgb_to_image_msg(rgb, 1_500_000_000, "cam")
    assert conv.stamp_to_ns(msg.header.stamp) == 1_500_000_000
    channels = {"rgb8": 3, "bgr8": 3, "mono8": 1, "bgra8": 4}[encoding]
    pixels = {"rgb8": rgb, "bgr8": rgb[:, :, ::-1], "bgra8": np.dstack([rgb[:, :, ::-1], np.full((5, 7), 255, np.uint8)]),
              "mono8": cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)[:, :, None]}[encoding]
    step = 7 * channels + 3  # padded rows
    data = np.zeros((5, step), np.uint8)
    data[:, :7 * channels] = pixels.reshape(5, -1)
    padded = Image(height=5, width=7, encoding=encoding, step=step, data=data.tobytes())
    out = conv.image_msg_to_rgb(padded)
    expected = np.repeat(pixels, 3, axis=2) if encoding == "mono8" else rgb
    np.testing.assert_array_equal(out, expected)


def test_bad_images_raise_input_error():
    with pytest.raises(InputError, match="encoding"):
        conv.image_msg_to_rgb(Image(height=2, width=2, encoding="yuv422", step=4, data=bytes(8)))
    with pytest.raises(InputError, match="zero size"):
        conv.image_msg_to_rgb(Image(height=0, width=0, encoding="rgb8", step=0, data=b""))
    with pytest.raises(InputError, match="cannot be decoded"):
        conv.compressed_msg_to_rgb(CompressedImage(format="jpeg", data=b"\xff\xd8" + b"x" * 100))
    kinds = [conv.classify_bad_image(m) for m in (
        Image(height=2, width=2, encoding="yuv422", step=4, data=bytes(8)), Image(encoding="rgb8"),
        Image(height=2, width=2, encoding="rgb8", step=6, data=bytes(3)),
        CompressedImage(format="jpeg", data=b"xx"), CompressedImage(format="theora", data=b"xx"),
        CompressedImage(format="png", data=b""))]
    assert kinds == ["unknown_encoding", "empty_image", "malformed_image", "corrupt_compressed",
                     "unknown_encoding", "empty_image"]


def test_compressed_jpeg_decodes_like_opencv():
    rgb = np.zeros((16, 24, 3), np.uint8)
    rgb[4:12, 6:18] = (250, 10, 10)
    ok, jpeg = cv2.imencode(".jpg", rgb[:, :, ::-1])
    out = conv.compressed_msg_to_rgb(CompressedImage(format="rgb8; jpeg compressed bgr8", data=jpeg.tobytes()))
    np.testing.assert_array_equal(out, cv2.imdecode(jpeg, cv2.IMREAD_COLOR)[:, :, ::-1])
    assert out[8, 12, 0] > 200 and out[8, 12, 2] < 60  # red stays red (RGB order)


def test_odometry_to_pose_and_nan_rejection():
    msg = Odometry()
    msg.pose.pose.position.x, msg.pose.pose.position.y = 1.0, -2.0
    msg.pose.pose.orientation.z, msg.pose.pose.orientation.w = math.sin(math.pi / 4), math.cos(math.pi / 4)
    pose = conv.odometry_to_pose(msg)
    np.testing.assert_allclose(pose[:3, 3], [1.0, -2.0, 0.0])
    np.testing.assert_allclose(pose[:3, :3] @ [1, 0, 0], [0, 1, 0], atol=1e-12)  # 90 deg about z
    msg.pose.pose.orientation.w = math.nan
    with pytest.raises(InputError, match="NaN"):
        conv.odometry_to_pose(msg)
    msg.pose.pose.orientation.z = msg.pose.pose.orientation.w = 0.0
    with pytest.raises(InputError, match="rotation"):
        conv.odometry_to_pose(msg)


@given(st.integers(min_value=0, max_value=2**62))
def test_stamp_round_trip(ns):
    assert conv.stamp_to_ns(conv.ns_to_stamp(ns)) == ns


def _loop(**kw):
    base = dict(query_id=41, query_stamp_ns=12_000_000_123, query_robot_id="r1", query_session_id="s2",
                match_id=7, match_stamp_ns=3_000_000_001, match_robot_id="r0", match_session_id="s1",
                global_similarity=0.8125, retrieval_rank=2, verification_method="mnn", local_matches=99,
                local_features=400, geometric_inliers=0, score=99.0, consistent_keyframes=3,
                descriptor_model="lite0-gem@abc", descriptor_dim=320)
    return LoopClosure(**{**base, **kw})


def test_loop_closure_to_msg_maps_every_field():
    msg = conv.loop_closure_to_msg(_loop(), "map")
    assert msg.header.frame_id == "map" and conv.stamp_to_ns(msg.header.stamp) == 12_000_000_123
    assert (msg.query_keyframe_id, msg.match_keyframe_id) == (41, 7)
    assert conv.stamp_to_ns(msg.match_stamp) == 3_000_000_001
    assert (msg.query_robot_id, msg.query_session_id, msg.match_robot_id, msg.match_session_id) == (
        "r1", "s2", "r0", "s1")
    assert (msg.global_similarity, msg.retrieval_rank, msg.local_matches, msg.local_features) == (0.8125, 2, 99, 400)
    assert (msg.score, msg.consistent_keyframes, msg.verification_method) == (99.0, 3, "mnn")
    assert (msg.descriptor_model, msg.descriptor_dim) == ("lite0-gem@abc", 320)
    assert not msg.relative_pose_valid and not any(msg.relative_pose.covariance)

    pose = np.eye(4)
    pose[:3, :3] = [[0, -1, 0], [1, 0, 0], [0, 0, 1]]
    pose[:3, 3] = [0.5, 0.25, -1.0]
    cov = np.diag(np.arange(1, 7, dtype=float))
    msg = conv.loop_closure_to_msg(_loop(relative_pose=pose, covariance=cov), "map")
    p = msg.relative_pose.pose
    assert msg.relative_pose_valid
    assert (p.position.x, p.position.y, p.position.z) == (0.5, 0.25, -1.0)
    np.testing.assert_allclose([p.orientation.z, p.orientation.w], [math.sqrt(0.5)] * 2)
    np.testing.assert_array_equal(np.reshape(msg.relative_pose.covariance, (6, 6)), cov)


def test_debug_image_draws_correspondences():
    q = np.zeros((60, 80, 3), np.uint8)
    m = np.zeros((30, 40, 3), np.uint8)
    pairs = (np.array([0, 5]), np.array([3, 1]))
    plain = conv.render_debug_image(q, m, None, None, None, "")
    drawn = conv.render_debug_image(q, m, pairs, (3, 4), (3, 4), "")
    assert plain.shape == drawn.shape == (60, 160, 3)
    assert drawn.sum() > plain.sum()
    assert conv.render_debug_image(q, None, None, None, None, "x").shape == (60, 160, 3)
