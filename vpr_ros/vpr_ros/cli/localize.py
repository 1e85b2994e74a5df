"""``vpr-ros localize MAP IMAGE``: where in the saved map was this image taken?

One image (JPEG or PNG) goes through the same detector and relocaliser as the node
(core/localization/): retrieval in MAP, verification, a relative pose to each accepted keyframe
(PnP with ``--depth``, essential matrix without), composed with the keyframes' map poses. Out comes
the pose of the robot's base frame (``frames.base_from_camera``) in the map frame with its 6x6
covariance (ROS PoseWithCovariance convention) and the evidence (matched keyframes, inliers), or
the refusal with its reason (docs/relocalization_core.md). One image has no earlier keyframe, so a
fix needs two agreeing keyframes of the map. Exit status: 0 fix, 1 refused or no match, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from vpr_ros.cli.replay import build_config, load_extractor, parse_overrides
from vpr_ros.cli.terminal import say
from vpr_ros.core.config import Config, config_from_flat, config_to_flat
from vpr_ros.core.errors import ConfigError, InputError
from vpr_ros.core.images import image_from_compressed
from vpr_ros.core.localization.map_pose import base_from_camera_matrix
from vpr_ros.core.localization.relocalizer import Fix, Refusal, Relocalizer
from vpr_ros.core.types import Frame
from vpr_ros.io.calibration import load_calibration, on_base
from vpr_ros.io.output_checks import check_map_load_source

__all__ = ["add_parser", "run", "read_depth", "result_dict"]

#: identity of the query image: never a session of a saved map, so the map's keyframes are candidates
QUERY_ROBOT, QUERY_SESSION = "localize", "localize"


def read_image(path: str) -> npt.NDArray[np.uint8]:
    """(H, W, 3) uint8 RGB from a JPEG or PNG file; InputError naming the file otherwise."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"image {path}: no such file; give a JPEG or PNG camera image")
    try:
        return image_from_compressed("", p.read_bytes())
    except InputError as exc:
        raise InputError(f"image {path}: {exc}; give a JPEG or PNG camera image") from None


def read_depth(path: str, hw: tuple[int, int]) -> npt.NDArray[np.generic]:
    """An aligned depth image: 16-bit PNG in millimetres (16UC1), 32-bit float TIFF in metres (32FC1),
    or a .npy array of either; it must have the image's size ``hw`` (height, width)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"--depth {path}: no such file; give a 16-bit PNG (mm) or float TIFF (m) aligned to the image")
    depth = np.load(p, allow_pickle=False) if p.suffix.lower() == ".npy" else cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
    if depth is None or depth.ndim != 2 or depth.dtype not in (np.uint16, np.float32):
        what = "unreadable" if depth is None else f"{depth.dtype} {depth.shape}"
        raise InputError(f"--depth {path} is {what}; give one channel of uint16 millimetres (16-bit PNG) or "
                         "float32 metres (TIFF or .npy)")
    if depth.shape != hw:
        raise InputError(f"--depth {path} is {depth.shape[1]}x{depth.shape[0]} but the image is {hw[1]}x{hw[0]}; "
                         "give the depth image aligned to it")
    return depth


def _config(args: argparse.Namespace) -> Config:
    config = build_config(args.config, parse_overrides(args.set))
    flat = config_to_flat(config)
    given = set(parse_overrides(args.set))
    fixed = {"relocalization.enabled": True, "relocalization.mode": "once", "map.load_path": "", "map.save_path": ""}
    for key, value in (("detector.robot_id", QUERY_ROBOT), ("detector.session_id", QUERY_SESSION)):
        if key not in given:
            fixed[key] = value
    return config_from_flat({**flat, **fixed})


def _frame(args: argparse.Namespace, config: Config) -> Frame:
    image = read_image(args.image)
    camera = depth = None
    if args.depth and not args.camera_info:
        raise ConfigError("--depth needs the camera calibration: add --camera-info FILE")
    if args.camera_info:
        if not Path(args.camera_info).is_file():
            raise ConfigError(f"--camera-info {args.camera_info}: no such file; give the camera calibration YAML")
        camera = on_base(load_calibration(args.camera_info), base_from_camera_matrix(config.frames)).camera
        h, w = image.shape[:2]
        if (camera.width, camera.height) != (w, h):
            raise ConfigError(f"--camera-info {args.camera_info} is for {camera.width}x{camera.height} images but "
                              f"{args.image} is {w}x{h}; give the calibration of this camera")
        if args.depth:
            depth = read_depth(args.depth, (h, w))
    return Frame(0, image, None, camera, depth)


def _json_matrix(a: npt.NDArray[np.float64]) -> list[float]:
    return [float(v) for v in np.asarray(a, np.float64).reshape(-1)]


def result_dict(outcome: Fix | Refusal | None, map_dir: str, image: str) -> dict[str, Any]:
    """What ``--json`` prints: status fix / refused / no_match, and the pose or the reason."""
    out: dict[str, Any] = {"map": map_dir, "image": image}
    if isinstance(outcome, Fix):
        out.update(status="fix", kind=outcome.kind, frame_id=outcome.frame_id, child_frame_id=outcome.child_frame_id,
                   position=_json_matrix(outcome.position), orientation_xyzw=_json_matrix(outcome.quaternion_xyzw),
                   covariance=_json_matrix(outcome.covariance), T_map_base=_json_matrix(outcome.T_map_base),
                   matched_keyframes=list(outcome.matched_keyframes), inliers=list(outcome.inliers),
                   confirmed_by=outcome.confirmed_by)
    elif isinstance(outcome, Refusal):
        out.update(status="refused", reason=outcome.reason, detail=outcome.detail,
                   matched_keyframes=list(outcome.matched_keyframes))
    else:
        out.update(status="no_match", reason="", detail="the image matched no keyframe of the map",
                   matched_keyframes=[])
    return out


def _lines(result: dict[str, Any]) -> list[str]:
    if result["status"] != "fix":
        lines = [f"no fix: {result['reason'] or 'no match'}: {result['detail']}"]
        if result["matched_keyframes"]:
            lines.append(f"  matched keyframes: {', '.join(result['matched_keyframes'])}")
        return lines
    sd = np.sqrt(np.clip(np.diag(np.reshape(result["covariance"], (6, 6))), 0.0, None))
    R = np.reshape(result["T_map_base"], (4, 4))[:3, :3]
    yaw = math.degrees(math.atan2(R[1, 0], R[0, 0]))
    x, y, z = result["position"]
    return [f"fix ({result['kind']}) of {result['child_frame_id']} in {result['frame_id']}:",
            f"  position  x {x:.3f}  y {y:.3f}  z {z:.3f} m   yaw {yaw:.1f} deg",
            "  orientation qx qy qz qw  " + "  ".join(f"{v:.4f}" for v in result["orientation_xyzw"]),
            f"  sigma  x y z {sd[0]:.3f} {sd[1]:.3f} {sd[2]:.3f} m   rot x y z "
            f"{math.degrees(sd[3]):.2f} {math.degrees(sd[4]):.2f} {math.degrees(sd[5]):.2f} deg",
            "  evidence: " + ", ".join(f"{k} ({n} inliers)" for k, n in zip(result["matched_keyframes"], result["inliers"]))
            + f"; confirmed by {result['confirmed_by']}"]


def run(args: argparse.Namespace) -> int:
    config = _config(args)
    check_map_load_source(args.map)
    frame = _frame(args, config)  # bad inputs fail before the model loads
    from vpr_ros.core.detector import LoopClosureDetector

    detector = LoopClosureDetector(config, load_extractor(config))
    if detector.load_map(args.map) == 0:
        raise InputError(f"map {args.map} holds no keyframe; give a map written by --map-save or ~/save_map")
    relocalizer = Relocalizer(config, detector)
    outcome = relocalizer.step(detector.process(frame))
    result = result_dict(outcome, args.map, args.image)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        for line in _lines(result):
            say(line)  # keyframe names come from the map: shown, never obeyed
    return 0 if result["status"] == "fix" else 1


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("localize", help="the pose of one image in a saved map (relocalisation)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("map", help="map directory written by --map-save or ~/save_map")
    p.add_argument("image", help="camera image, JPEG or PNG")
    p.add_argument("--camera-info", metavar="YAML",
                   help="calibration of the image: ROS camera_calibration YAML (or EuRoC/Kimera sensor YAML); "
                        "without it no relative pose can be measured")
    p.add_argument("--depth", metavar="IMAGE",
                   help="depth aligned to the image: 16-bit PNG (mm), float32 TIFF or .npy (m); metric fixes")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--config", help="ROS 2 parameter YAML (like config/loop_closure.yaml): the map's model and "
                                    "thresholds")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a parameter, e.g. --set frames.base_from_camera='0.2 0 0.4 -0.5 0.5 -0.5 0.5'")
    p.set_defaults(func=run)
    return p
