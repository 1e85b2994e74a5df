"""Keyframe gates on odd but finite poses, and the default travel gate."""

from __future__ import annotations

import numpy as np

from vpr_ros.core.config import KeyframeConfig
from vpr_ros.core.keyframes import KeyframeSelector
from vpr_ros.core.types import Keyframe
from vpr_ros.io.poses import pose_matrix

NS = 1_000_000_000
G = np.ones(4, np.float32) / 2


def _kf(stamp_ns: int, pose: np.ndarray | None) -> Keyframe:
    return Keyframe(0, stamp_ns, "r", "s", G, pose=pose)


def test_a_singular_last_pose_does_not_fail_every_later_frame():
    selector = KeyframeSelector(KeyframeConfig(min_translation_m=0.5, min_rotation_deg=10.0))
    selector.accept(_kf(0, np.zeros((4, 4))))  # finite, so it passed validation, but singular
    pose = pose_matrix((1.0, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0))
    assert selector.check(NS, G, pose) is None  # np.linalg.inv raised LinAlgError here


def test_rigid_relative_motion_matches_the_matrix_inverse():
    rng = np.random.default_rng(3)
    selector = KeyframeSelector(KeyframeConfig(min_translation_m=1.0, min_rotation_deg=0.0))
    for _ in range(20):
        q0, q1 = rng.normal(size=4), rng.normal(size=4)
        a = pose_matrix(tuple(rng.normal(size=3) * 5), tuple(q0 / np.linalg.norm(q0)))
        b = pose_matrix(tuple(rng.normal(size=3) * 5), tuple(q1 / np.linalg.norm(q1)))
        moved = np.linalg.norm((np.linalg.inv(a) @ b)[:3, 3])
        selector.accept(_kf(0, a))
        assert (selector.check(NS, G, b) is None) == (moved >= 1.0)


def test_default_travel_gate_skips_a_standing_robot_only_with_odometry():
    selector = KeyframeSelector(KeyframeConfig())
    still = pose_matrix((2.0, 1.0, 0.0), (0.0, 0.0, 0.0, 1.0))
    selector.accept(_kf(0, still))
    assert selector.check(NS, G, still) == "travel"
    assert selector.check(NS, G, None) is None  # no odometry: every frame is a keyframe
    moved = pose_matrix((2.6, 1.0, 0.0), (0.0, 0.0, 0.0, 1.0))
    assert selector.check(NS, G, moved) is None
    turned = pose_matrix((2.0, 1.0, 0.0), (0.0, 0.0, np.sin(np.radians(8)), np.cos(np.radians(8))))
    assert selector.check(NS, G, turned) is None  # 16 degrees >= 15
