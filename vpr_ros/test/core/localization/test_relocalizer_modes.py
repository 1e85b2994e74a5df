"""The relocaliser's modes (on_demand, once, continuous rate limit) and frames: with
``frames.base_from_camera`` the fix is of the base frame, whether the map's keyframes are of the
camera or of the base (SIMULATED, RENDERED from real photographs)."""

from __future__ import annotations

import numpy as np

from reloc_scene import BASE, mapped_detector, query_frame, scene
from vpr_ros.core.config import config_from_flat
from vpr_ros.core.localization.map_pose import base_from_camera_matrix
from vpr_ros.core.localization.relocalizer import Fix, Refusal, Relocalizer

MOUNT = "0.2 0.05 0.4 -0.5 0.5 -0.5 0.5"  # camera 0.2 m ahead of the base, 0.4 m up, looking along base x


def _relocalizer(det, overrides):
    return Relocalizer(config_from_flat({**BASE, **overrides}), det)


def test_on_demand_publishes_the_first_confident_fix_after_a_request(tiny_extractor):
    s = scene()
    det = mapped_detector(s, tiny_extractor)
    reloc = _relocalizer(det, {})  # on_demand is the default
    assert reloc.config.relocalization.mode == "on_demand" and not reloc.pending
    assert reloc.step(det.process(query_frame(s, 0, 100.0))) is None  # nothing before the request
    reloc.request()
    assert reloc.pending
    fix = reloc.step(det.process(query_frame(s, 1, 101.0)))
    assert isinstance(fix, Fix) and not reloc.pending
    assert reloc.step(det.process(query_frame(s, 2, 102.0))) is None  # one fix per request
    assert reloc.counts["fixes"] == 1


def test_once_publishes_one_fix_and_continuous_is_rate_limited(tiny_extractor):
    s = scene()
    det = mapped_detector(s, tiny_extractor)
    once = _relocalizer(det, {"relocalization.mode": "once"})
    assert once.pending
    assert isinstance(once.step(det.process(query_frame(s, 0, 100.0))), Fix)
    assert once.step(det.process(query_frame(s, 1, 101.0))) is None
    det = mapped_detector(s, tiny_extractor)
    cont = _relocalizer(det, {"relocalization.mode": "continuous", "relocalization.min_interval_sec": 1.5})
    outcomes = [cont.step(det.process(query_frame(s, k, 100.0 + k))) for k in (0, 1, 2)]
    assert isinstance(outcomes[0], Fix) and isinstance(outcomes[2], Fix)
    assert isinstance(outcomes[1], Refusal) and outcomes[1].reason == "rate_limited"  # 1 s after the first
    assert cont.counts["rate_limited"] == 1 and cont.counts["fixes"] == 2


def test_fixes_are_of_the_base_frame_with_base_from_camera(tiny_extractor):
    s = scene()
    B = base_from_camera_matrix(config_from_flat({"frames.base_from_camera": MOUNT}).frames)
    overrides = {"relocalization.mode": "continuous", "frames.base_from_camera": MOUNT}
    truth = s.query_views[0][0] @ np.linalg.inv(B)  # T_map_base of the query: T_map_cam * T_cam_base
    # the map's keyframes of the camera frame (a map made before base_from_camera), the query's camera as its body
    det = mapped_detector(s, tiny_extractor)
    camera_map = _relocalizer(det, overrides).step(det.process(query_frame(s, 0, 100.0)))
    # the map's keyframes of the base frame (T_body_cam = B, poses of the base), the query likewise
    det = mapped_detector(s, tiny_extractor, T_body_cam=B)
    base_map = _relocalizer(det, overrides).step(det.process(query_frame(s, 0, 100.0, T_body_cam=B)))
    for fix in (camera_map, base_map):
        assert isinstance(fix, Fix)
        assert np.linalg.norm(fix.T_map_base[:3, 3] - truth[:3, 3]) < 0.05
        assert np.degrees(np.arccos(np.clip((np.trace(truth[:3, :3].T @ fix.T_map_base[:3, :3]) - 1) / 2, -1, 1))) < 1.0
    # without the mount the fix is the camera's pose, 0.45 m from the base's
    det = mapped_detector(s, tiny_extractor)
    plain = _relocalizer(det, {"relocalization.mode": "continuous"}).step(det.process(query_frame(s, 0, 100.0)))
    assert np.linalg.norm(plain.T_map_base[:3, 3] - truth[:3, 3]) > 0.4
