"""Issue 19: odometry at the image rate. The ROS-free odometry buffer of the node (nodes/odom_buffer.py):
SE(3) interpolation, waiting for the image's own odometry, counting frames without a pose.
The same over real DDS: test_node_odometry.py."""

from __future__ import annotations

import collections
import threading
import time

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from vpr_ros.io.poses import interpolate_pose
from vpr_ros.nodes.odom_buffer import OdomBuffer

MS = 1_000_000


def pose(x: float, yaw_deg: float = 0.0) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = Rotation.from_euler("z", yaw_deg, degrees=True).as_matrix()
    out[:3, 3] = (x, 2.0 * x, 0.5)
    return out


def counted(max_age: float = 0.2, wait: float = 0.0) -> tuple[OdomBuffer, collections.Counter]:
    counts: collections.Counter = collections.Counter()
    return OdomBuffer(max_age, wait, count=lambda key: counts.update([key])), counts


def test_interpolation_is_linear_in_translation_and_slerp_in_rotation():
    a, b = pose(0.0, 10.0), pose(1.0, 50.0)
    np.testing.assert_allclose(interpolate_pose(a, b, 0.0), a, atol=1e-12)
    np.testing.assert_allclose(interpolate_pose(a, b, 1.0), b, atol=1e-12)
    np.testing.assert_allclose(interpolate_pose(a, b, 0.25), pose(0.25, 20.0), atol=1e-12)
    # The shorter arc across +-180 deg: 170 -> -170 passes through 180, not through 0.
    mid = interpolate_pose(pose(0.0, 170.0), pose(0.0, -170.0), 0.5)
    assert abs(abs(Rotation.from_matrix(mid[:3, :3]).as_euler("zyx", degrees=True)[0]) - 180.0) < 1e-9
    r = mid[:3, :3]
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)


def test_lookup_exact_interpolated_nearest_or_none_and_counted():
    buf, counts = counted(max_age=0.2)
    for i in range(3):
        buf.add(1000 * MS + i * 100 * MS, pose(float(i), 10.0 * i))
    np.testing.assert_allclose(buf.pose_at(1100 * MS), pose(1.0, 10.0))          # exact stamp
    np.testing.assert_allclose(buf.pose_at(1150 * MS), pose(1.5, 15.0), atol=1e-12)  # between two
    np.testing.assert_allclose(buf.pose_at(1300 * MS), pose(2.0, 20.0))          # newest within max_age
    np.testing.assert_allclose(buf.pose_at(850 * MS), pose(0.0, 0.0))            # oldest within max_age
    assert buf.pose_at(1500 * MS) is None and buf.pose_at(700 * MS) is None
    assert counts == {"odom_interpolated": 1, "odom_missing": 2}
    # A gap wider than max_age on one side: the near pose, never an interpolation across the gap.
    buf.add(2000 * MS, pose(10.0))
    np.testing.assert_allclose(buf.pose_at(1250 * MS), pose(2.0, 20.0))


def test_out_of_order_and_repeated_stamps_and_the_size_bound():
    buf = OdomBuffer(0.2, 0.0, size=5)
    for i in (3, 1, 2, 0, 2):
        buf.add(i * 100 * MS, pose(float(i)))
    np.testing.assert_allclose(buf.pose_at(50 * MS), pose(0.5), atol=1e-12)
    assert len(buf) == 4
    for i in range(4, 10):
        buf.add(i * 100 * MS, pose(float(i)))
    assert len(buf) == 5 and buf.pose_at(100 * MS) is None  # the oldest went
    buf.clear()
    assert len(buf) == 0 and buf.pose_at(900 * MS) is None


def test_an_image_waits_for_its_own_odometry_that_arrives_just_after_it():
    # 4 Hz camera and odometry with the same stamps, odometry 20 ms after the image: the previous
    # pose is 250 ms old (> max_age 0.2), so without waiting the frame would get no pose.
    buf, counts = counted(max_age=0.2, wait=0.5)
    buf.add(1000 * MS, pose(0.0))
    late = threading.Timer(0.02, lambda: buf.add(1250 * MS, pose(1.0)))
    late.start()
    t0 = time.monotonic()
    got = buf.pose_at(1250 * MS)
    waited = time.monotonic() - t0
    late.join()
    np.testing.assert_allclose(got, pose(1.0))
    assert 0.01 <= waited < 0.4
    assert counts == {"odom_waited": 1}
    # Without the wait (odom.wait_sec 0) the same order loses the pose: what the issue saw.
    eager, eager_counts = counted(max_age=0.2, wait=0.0)
    eager.add(1000 * MS, pose(0.0))
    assert eager.pose_at(1250 * MS) is None and eager_counts == {"odom_missing": 1}


def test_no_wait_without_odometry_or_when_it_stopped_or_is_already_there():
    for prepare in ([], [(0, pose(0.0))], [(3000 * MS, pose(3.0))]):
        buf, counts = counted(max_age=0.2, wait=1.0)
        for stamp, p in prepare:
            buf.add(stamp, p)
        t0 = time.monotonic()
        buf.pose_at(3000 * MS)  # empty; stopped 3 s before the image; the image's own pose is here
        assert time.monotonic() - t0 < 0.2, prepare
        assert "odom_waited" not in counts
    # Waiting ends at odom.wait_sec when the odometry never comes; the older pose is used if near.
    buf, counts = counted(max_age=0.2, wait=0.1)
    buf.add(900 * MS, pose(0.0))
    t0 = time.monotonic()
    np.testing.assert_allclose(buf.pose_at(1000 * MS), pose(0.0))
    assert 0.09 <= time.monotonic() - t0 < 0.5
    assert counts == {"odom_waited": 1}


@pytest.mark.parametrize("w", [0.1, 0.5, 0.9])
def test_interpolated_rotation_is_on_the_geodesic(w: float):
    a = pose(0.0)
    b = np.eye(4)
    b[:3, :3] = Rotation.from_rotvec([0.3, -0.2, 0.5]).as_matrix()
    got = Rotation.from_matrix(interpolate_pose(a, b, w)[:3, :3]).as_rotvec()
    np.testing.assert_allclose(got, w * np.array([0.3, -0.2, 0.5]), atol=1e-12)
