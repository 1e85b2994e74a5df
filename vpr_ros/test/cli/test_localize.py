"""``vpr-ros localize MAP IMAGE``, end to end with the default model on a SIMULATED (RENDERED from real
photographs) RGB-D room: the pose of a new image in the saved map, its evidence, the base frame via
``frames.base_from_camera``, no fix in a look-alike room, and clear errors for bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from vpr_ros.cli.main import main
from vpr_ros.cli.rendered_rooms import pose_from_euler, rendered_view
from vpr_ros.cli.rendered_scenes import simulated_camera, simulated_look_alike_room, simulated_room
from vpr_ros.cli.replay import load_extractor
from vpr_ros.core.config import config_from_flat
from vpr_ros.core.detector import LoopClosureDetector
from vpr_ros.core.geometry.camera import PinholeCamera
from vpr_ros.core.localization.map_pose import base_from_camera_matrix
from vpr_ros.core.types import Frame

MAP_VIEWS = [(-1.0, -30), (-0.5, -15), (0.0, 0), (0.5, 15), (1.0, 30), (0.0, 45), (0.0, -45)]
QUERY = pose_from_euler([-0.3, 0.1, 2.3], -10, 3)
MOUNT = "0.2 0.05 0.4 -0.5 0.5 -0.5 0.5"


def _write_view(view, out: Path, name: str) -> tuple[str, str]:
    image, depth = out / f"{name}.png", out / f"{name}_depth.png"
    cv2.imwrite(str(image), cv2.cvtColor(view.image, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(depth), np.round(view.depth * 1000).astype(np.uint16))  # 16UC1 millimetres
    return str(image), str(depth)


def _camera_yaml(cam, path: Path) -> str:
    K = cam.K
    path.write_text(yaml.safe_dump({
        "image_width": cam.width, "image_height": cam.height, "camera_name": "simulated",
        "camera_matrix": {"rows": 3, "cols": 3, "data": K.reshape(-1).tolist()}, "distortion_model": "plumb_bob",
        "distortion_coefficients": {"rows": 1, "cols": 5, "data": [0.0] * 5},
        "rectification_matrix": {"rows": 3, "cols": 3, "data": np.eye(3).reshape(-1).tolist()},
        "projection_matrix": {"rows": 3, "cols": 4, "data": np.c_[K, np.zeros(3)].reshape(-1).tolist()}}))
    return str(path)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A saved map of 7 RGB-D keyframes of a SIMULATED room (camera poses), a query view and a view of
    the room's look-alike, written as files."""
    out = tmp_path_factory.mktemp("localize")
    room, cam = simulated_room(3), simulated_camera(320, 240)
    config = config_from_flat({"detector.robot_id": "mapper", "detector.session_id": "day1",
                               "keyframes.min_translation_m": 0.0, "keyframes.min_rotation_deg": 0.0})
    det = LoopClosureDetector(config, load_extractor(config))
    camera = PinholeCamera(cam.K, cam.D, cam.width, cam.height)
    for i, (x, yaw) in enumerate(MAP_VIEWS):
        T = pose_from_euler([x, 0.0, 2.0], yaw)
        view = rendered_view(room, cam, T, supersample=1)
        det.process(Frame(i * 10**9, view.image, T, camera, view.depth))
    det.save_map(out / "map")
    query = _write_view(rendered_view(room, cam, QUERY, supersample=1), out, "query")
    other = _write_view(rendered_view(simulated_look_alike_room(room, 5), cam, QUERY, supersample=1), out, "lookalike")
    return {"map": str(out / "map"), "query": query, "lookalike": other,
            "camera": _camera_yaml(cam, out / "camera.yaml"), "dir": out}


def _localize(world, capsys, *extra, image=None):
    image, depth = image or world["query"]
    rc = main(["localize", world["map"], image, "--camera-info", world["camera"], "--depth", depth, "--json", *extra])
    return rc, json.loads(capsys.readouterr().out)


def test_a_new_image_is_placed_in_the_map_with_its_evidence(world, capsys):
    rc, result = _localize(world, capsys)
    assert rc == 0 and result["status"] == "fix" and result["kind"] == "metric", result
    assert (result["frame_id"], result["child_frame_id"]) == ("map", "base_link")
    assert np.linalg.norm(np.array(result["position"]) - QUERY[:3, 3]) < 0.05
    T = np.reshape(result["T_map_base"], (4, 4))
    assert np.degrees(np.arccos(np.clip((np.trace(QUERY[:3, :3].T @ T[:3, :3]) - 1) / 2, -1, 1))) < 1.0
    cov = np.reshape(result["covariance"], (6, 6))
    assert np.allclose(cov, cov.T) and np.linalg.eigvalsh(cov).min() > 0
    assert len(result["matched_keyframes"]) >= 2 and all(k.startswith("mapper/day1/") for k in result["matched_keyframes"])
    assert len(result["inliers"]) == len(result["matched_keyframes"]) and min(result["inliers"]) >= 20
    # the text output says the same
    assert main(["localize", world["map"], world["query"][0], "--camera-info", world["camera"],
                 "--depth", world["query"][1]]) == 0
    text = capsys.readouterr().out
    assert "fix (metric) of base_link in map" in text and "inliers" in text and "mapper/day1/" in text


def test_the_fix_is_of_the_base_frame_with_base_from_camera(world, capsys):
    rc, result = _localize(world, capsys, "--set", f"frames.base_from_camera={MOUNT}")
    B = base_from_camera_matrix(config_from_flat({"frames.base_from_camera": MOUNT}).frames)
    truth = QUERY @ np.linalg.inv(B)
    assert rc == 0 and np.linalg.norm(np.array(result["position"]) - truth[:3, 3]) < 0.05


def test_no_fix_in_a_look_alike_room(world, capsys):
    rc, result = _localize(world, capsys, image=world["lookalike"])
    assert rc == 1 and result["status"] in ("refused", "no_match") and "position" not in result, result


def test_bad_inputs_fail_with_a_clear_error_before_the_model_loads(world, capsys, tmp_path):
    bad_image = tmp_path / "bad.png"
    bad_image.write_bytes(b"not an image")
    small = tmp_path / "small.yaml"
    doc = yaml.safe_load(Path(world["camera"]).read_text())
    doc.update(image_width=640, image_height=480)
    small.write_text(yaml.safe_dump(doc))
    q, d = world["query"]
    cases = [([str(tmp_path / "nomap"), q], "does not exist"),
             ([world["map"], str(tmp_path / "none.png")], "no such file"),
             ([world["map"], str(bad_image)], "bad.png"),
             ([world["map"], q, "--camera-info", str(small)], "640x480 images but"),
             ([world["map"], q, "--depth", d], "--depth needs the camera calibration"),
             ([world["map"], q, "--camera-info", world["camera"], "--depth", q], "--depth"),
             ([world["map"], q, "--set", "frames.base_from_camera=1 2 3"], "frames.base_from_camera")]
    for argv, says in cases:
        assert main(["localize", *argv]) == 2, argv
        err = capsys.readouterr().err
        assert "vpr-ros localize: error:" in err and says in err, (argv, err)
