"""The fleet's messages through the real rosidl types and CDR serialization (no DDS)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("vpr_ros_msgs.msg")
from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402
from vpr_ros_msgs.msg import KeyframeDescriptors, KeyframeGeometry  # noqa: E402

from vpr_ros.core.fleet.remote_keyframes import decode_batch, decode_geometry, encode_batch, encode_geometry  # noqa: E402
from vpr_ros.core.types import Keyframe, KeyframeGeometry as CoreGeometry  # noqa: E402
from vpr_ros.nodes.fleet import batch_to_msg, geometry_to_msg, msg_to_batch, msg_to_geometry_fields  # noqa: E402


def test_descriptor_batch_survives_cdr_and_costs_two_bytes_per_dimension():
    rng = np.random.default_rng(0)
    g = rng.standard_normal((10, 1024)).astype(np.float32)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    kfs = [Keyframe(id=100 + i, stamp_ns=5 * 10**9 + i, robot_id="r1", session_id="s", global_=g[i],
                    pose=np.eye(4) if i % 2 else None) for i in range(10)]
    msg = batch_to_msg(encode_batch(kfs, "selavpr@abc", 1024, "/r1/fleet/get_features"), _stamp())
    wire = serialize_message(msg)
    back = decode_batch(msg_to_batch(deserialize_message(wire, KeyframeDescriptors)), "selavpr@abc", 1024)
    assert [(k.id, k.stamp_ns) for k in back] == [(k.id, k.stamp_ns) for k in kfs]
    assert all(float(b.global_ @ k.global_) > 1 - 1e-5 for b, k in zip(back, kfs))
    assert back[1].pose is not None and back[0].pose is None
    per_keyframe = (len(wire) - 10 * 16 * 8) / 10  # poses aside
    assert 2048 < per_keyframe < 2048 + 40, per_keyframe  # a SelaVPR keyframe: 2 kB + id and stamp


def test_keyframe_geometry_survives_cdr():
    rng = np.random.default_rng(1)
    g = CoreGeometry(keypoints=rng.random((7, 2), np.float32), descriptors=rng.random((7, 128), np.float32),
                     points3d=rng.random((7, 3), np.float32), image_hw=(10, 20), K=np.eye(3), D=np.zeros(4),
                     distortion_model="equidistant")
    wire = serialize_message(geometry_to_msg(encode_geometry(g)))
    back = decode_geometry(msg_to_geometry_fields(deserialize_message(wire, KeyframeGeometry)))
    assert np.array_equal(back.descriptors, g.descriptors) and back.descriptors.dtype == np.float32
    assert np.array_equal(back.keypoints, g.keypoints) and back.distortion_model == "equidistant"
    assert decode_geometry(msg_to_geometry_fields(KeyframeGeometry())) is None


def _stamp():
    from builtin_interfaces.msg import Time
    return Time(sec=1, nanosec=2)
