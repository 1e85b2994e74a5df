"""Relative pose on real images with the real default model (lite0-gem, packaged weights).

EuRoC V1_01 revisit pairs with ground truth (stereo -> PnP through the detector; monocular
essential), EuRoC images warped by known pure rotations, and unrelated pairs. About 10 s on 2 cores.
"""

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest

from vpr_ros.cli.bench.geometry import (WARP_ROTATIONS_DEG, direction_error_deg, load_euroc, rotation_error_deg,
                                        warp_by_rotation)
from vpr_ros.core.geometry.camera import PinholeCamera
from vpr_ros.core.config import Config, DetectorConfig, GeometryConfig, VerifyConfig
from vpr_ros.core.geometry.correspondences import grid_layout
from vpr_ros.core.detector import LoopClosureDetector
from vpr_ros.core.geometry.relative_pose import relative_pose
from vpr_ros.core.geometry.keyframe_geometry import keyframe_geometry
from vpr_ros.core.types import Frame
from vpr_ros.core.matching.verification import mnn_pairs

STREET = Path(__file__).resolve().parents[2] / "data" / "toy_street"
PAIRS = [("left_img_1", "left_img_0"), ("left_img_3", "left_img_2")]  # (query, match)


@pytest.fixture(scope="module")
def model():
    from vpr_ros.models import load_model
    return load_model("lite0-gem", backend="torch")


@pytest.fixture(scope="module")
def euroc():
    return load_euroc()


@pytest.fixture(scope="module")
def stereo_geometry(euroc):
    """SIFT keypoints + stereo points of the four left images (default GeometryConfig)."""
    im, left, rig = euroc["images"], euroc["left"], euroc["rig"]
    return {f"left_img_{i}": keyframe_geometry(im[f"left_img_{i}"], left, GeometryConfig(),
                                               right=im[f"right_img_{i}"], stereo=rig) for i in range(4)}


def _truth(euroc, query: str, match: str) -> np.ndarray:
    return np.linalg.inv(euroc["gt"][match]) @ euroc["gt"][query]


def _detector(model, geometry: GeometryConfig) -> LoopClosureDetector:
    config = Config(verify=VerifyConfig(temporal_consistency=1),
                    detector=DetectorConfig(min_loop_gap_sec=1.0), geometry=geometry)
    return LoopClosureDetector(config, model)


def _loop(model, euroc, query: str, match: str, stereo: bool, geometry: GeometryConfig = GeometryConfig()):
    """Map the match keyframe, then process the query frame: the detector's own path end to end."""
    det = _detector(model, geometry)
    im, left, rig = euroc["images"], euroc["left"], euroc["rig"]

    def frame(name: str, stamp_s: int) -> Frame:
        right = im[name.replace("left", "right")] if stereo else None
        return Frame(stamp_s * 10**9, im[name], camera=left, right=right, stereo=rig if stereo else None)
    assert det.process(frame(match, 0)).loop_closures == []
    return det.process(frame(query, 100))


@pytest.mark.parametrize("query, match", PAIRS)
def test_stereo_pnp_recovers_the_ground_truth_pose(model, euroc, query, match, tmp_path):
    step = _loop(model, euroc, query, match, stereo=True)
    assert len(step.loop_closures) == 1 and step.geometry_rejection is None
    loop = step.loop_closures[0]
    assert loop.relative_pose_valid and loop.translation_scale_known and loop.geometry_method == "pnp"
    truth = _truth(euroc, query, match)
    assert rotation_error_deg(loop.relative_pose, truth) < 2.0
    assert np.linalg.norm(loop.relative_pose[:3, 3] - truth[:3, 3]) < 0.10
    assert loop.geometric_inliers >= 100
    cov = loop.covariance
    assert cov.shape == (6, 6) and np.all(np.linalg.eigvalsh(cov) > 0)
    # A few mm and a fraction of a degree: the inliers pin the pose down far better than the
    # residual to ground truth, which is dominated by the dataset's own ~2 deg (see below).
    assert np.sqrt(np.diag(cov)[:3]).max() < 0.02 and np.sqrt(np.diag(cov)[3:]).max() < np.radians(0.5)
    msg = _read_back(tmp_path, loop)
    assert msg.relative_pose_valid and msg.translation_scale_known
    assert msg.relative_pose.pose.position.x == pytest.approx(loop.relative_pose[0, 3])


def test_pair_1_0_residual_is_the_ground_truth_not_the_estimator(model, euroc, stereo_geometry):
    # Estimating query->match and match->query independently agrees to ~0.1 deg, while both differ
    # from ground truth by ~2 deg: the 2 deg target is at the limit of the sample's ground truth.
    cfg = GeometryConfig(method="pnp")
    im, g = euroc["images"], stereo_geometry
    local = model.extract([im["left_img_1"], im["left_img_0"]]).local
    c1, c0 = mnn_pairs(local[0], local[1])
    lay = grid_layout((480, 752), local.shape[1:3])
    fwd = relative_pose(g["left_img_1"], g["left_img_0"], lay, lay, c1, c0, cfg).T_match_query
    back = relative_pose(g["left_img_0"], g["left_img_1"], lay, lay, c0, c1, cfg).T_match_query
    assert rotation_error_deg(fwd, np.linalg.inv(back)) < 0.5
    assert np.linalg.norm(fwd[:3, 3] - np.linalg.inv(back)[:3, 3]) < 0.03


def _read_back(tmp_path, loop):
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    from vpr_ros.io.bag_writer import write_loop_closures
    path = write_loop_closures(tmp_path / "lc", [loop], frame_id="map")
    with AnyReader([path], default_typestore=get_typestore(Stores.EMPTY)) as reader:
        return [reader.deserialize(raw, c.msgtype) for c, _, raw in reader.messages()][0]


@pytest.mark.parametrize("query, match", PAIRS)
def test_monocular_essential_rotation_and_direction(model, euroc, query, match, tmp_path):
    step = _loop(model, euroc, query, match, stereo=False)
    loop = step.loop_closures[0]
    assert loop.relative_pose_valid and loop.geometry_method == "essential"
    assert not loop.translation_scale_known
    truth = _truth(euroc, query, match)
    assert rotation_error_deg(loop.relative_pose, truth) < 3.0
    assert direction_error_deg(loop.relative_pose[:3, 3], truth[:3, 3]) < 15.0
    assert np.linalg.norm(loop.relative_pose[:3, 3]) == pytest.approx(1.0)
    msg = _read_back(tmp_path, loop)  # the message tells backends the scale is unknown
    assert msg.relative_pose_valid and not msg.translation_scale_known
    np.testing.assert_allclose(msg.relative_pose.covariance, loop.covariance.reshape(36))


def test_without_a_camera_loops_are_unchanged(model, euroc):
    det = _detector(model, GeometryConfig())
    im = euroc["images"]
    det.process(Frame(0, im["left_img_0"]))
    step = det.process(Frame(100 * 10**9, im["left_img_1"]))
    assert len(step.loop_closures) == 1
    loop = step.loop_closures[0]
    assert not loop.relative_pose_valid and loop.geometry_method == "" and step.geometry_rejection is None


def test_pure_rotation_warps_recover_the_rotation(model, euroc):
    left = euroc["left"]
    pinhole = PinholeCamera(left.K, np.zeros(0), left.width, left.height)  # the warp has no distortion
    cfg = GeometryConfig(method="essential")
    errors = []
    for base in ("left_img_0", "left_img_2"):
        image = euroc["images"][base]
        match = keyframe_geometry(image, pinhole, cfg)
        for rot in WARP_ROTATIONS_DEG[::2] if base == "left_img_2" else WARP_ROTATIONS_DEG:
            warped, truth = warp_by_rotation(image, left.K, rot)
            local = model.extract([warped, image]).local
            c0, c1 = mnn_pairs(local[0], local[1])
            lay = grid_layout(image.shape[:2], local.shape[1:3])
            est = relative_pose(keyframe_geometry(warped, pinhole, cfg), match, lay, lay, c0, c1, cfg)
            # No translation: the direction is unobservable, so the pose is not valid, but measured.
            assert est.reason == "low_parallax" and not est.valid
            errors.append(rotation_error_deg(est.T_match_query, truth))
    assert np.median(errors) < 0.5, errors


@pytest.mark.parametrize("street", ["db1.jpg", "db10.jpg"])
@pytest.mark.parametrize("method", ["pnp", "essential"])
def test_unrelated_pairs_are_rejected(model, euroc, stereo_geometry, street, method):
    im = euroc["images"]
    other = cv2.cvtColor(cv2.imread(str(STREET / street)), cv2.COLOR_BGR2RGB)
    cfg = GeometryConfig(method=method)
    street_cam = PinholeCamera(np.array([[400.0, 0, 256], [0, 400, 256], [0, 0, 1]]), np.zeros(0), 512, 512)
    for base in ("left_img_0", "left_img_2"):
        match = stereo_geometry[base]
        query = keyframe_geometry(other, street_cam, cfg)
        local = model.extract([other, im[base]]).local
        c0, c1 = mnn_pairs(local[0], local[1])
        assert len(c0) > 20  # MNN always pairs some cells: geometry must say no
        est = relative_pose(query, match, grid_layout((512, 512), local.shape[1:3]),
                            grid_layout((480, 752), local.shape[1:3]), c0, c1, cfg)
        assert not est.valid, (base, est)


def test_reject_mode_drops_loops_without_a_valid_pose(model, euroc):
    # A geometry that cannot be satisfied: the loop is dropped and the reason is reported.
    strict = dataclasses.replace(GeometryConfig(), min_inlier_ratio=0.999, on_invalid="reject")
    step = _loop(model, euroc, "left_img_1", "left_img_0", stereo=True, geometry=strict)
    assert step.loop_closures == [] and step.geometry_rejection == "low_inlier_ratio"
    publish = dataclasses.replace(strict, on_invalid="publish")
    step = _loop(model, euroc, "left_img_1", "left_img_0", stereo=True, geometry=publish)
    loop = step.loop_closures[0]
    assert not loop.relative_pose_valid and loop.geometry_rejection == "low_inlier_ratio"
    assert loop.relative_pose is None and loop.covariance is None


def test_forward_and_backward_pnp_agree_within_the_calibrated_covariance(model, euroc):
    # Real images, no ground truth needed (issue 20): the pose from query pixels vs match stereo
    # points and from match pixels vs query stereo points differ by what both covariances allow.
    # The calibrated model with the stereo points' depth noise gives NEES 6.5 / 7.1 (issue 20's, points
    # exact: 12.6 / 13.0; 6 DoF: 99 % bound 16.8); the plain i.i.d. covariance of the issue 19
    # estimator 42 / 43, i.e. ~1.8x too small standard deviations.
    from vpr_ros.cli.bench.geometry_euroc import euroc_consistency
    now, before = euroc_consistency(model, euroc, GeometryConfig(),
                                    GeometryConfig(covariance_model="iid", refine_essential=False,
                                                   stereo_disparity_sigma_px=0.0))
    assert all(r["pnp_valid"] and r["essential_valid"] for r in now + before)
    assert all(2.0 < r["pnp_nees_fwd_bwd"] < 16.8 for r in now), now
    assert all(r["pnp_nees_fwd_bwd"] > 25.0 for r in before), before
    # Why NEES against the ground truth is not the check: on pair 1-0 PnP and the essential matrix (no
    # depth, other keypoints) miss the reference rotation by the same ~2 deg, while PnP's scale matches it.
    pnp_err, ess_err = next(r for r in now if r["pair"] == "1-0")["rot_err_gt_deg"]
    assert pnp_err > 1.5 and abs(pnp_err - ess_err) < 0.2, (pnp_err, ess_err)
    assert all(abs(r["scale_vs_gt"] - 1.0) < 0.1 for r in now), now
