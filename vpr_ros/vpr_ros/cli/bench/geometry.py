"""``vpr-ros bench geometry``: cost and accuracy of the relative pose of a loop.

Per candidate, side by side in one run: MNN alone vs MNN + keypoint refinement + pose, on local
maps of lite0-gem's size (20x20x112) and SelaVPR's (61x61x128, random maps). Then the accuracy on
real images: the EuRoC V1_01 stereo revisit pairs (PnP and essential against ground truth) and
EuRoC images warped by known pure rotations, for each refinement (cell centres, ORB, SIFT), and the
NEES of both estimators on the EuRoC pairs (geometry_euroc.py).
``--rendered``: errors and NEES through ``vpr-ros replay`` on SIMULATED rooms (geometry_rendered.py).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import platform
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from vpr_ros.cli.bench.geometry_euroc import print_euroc_consistency
from vpr_ros.cli.bench.geometry_rendered import add_rendered_arguments, run_rendered_bench
from vpr_ros.core.geometry.camera import PinholeCamera, load_camera, stereo_from_extrinsics
from vpr_ros.core.config import GeometryConfig
from vpr_ros.core.geometry.correspondences import grid_layout
from vpr_ros.core.eval.metrics import latency_stats
from vpr_ros.core.eval.relocalization import rotation_error_deg
from vpr_ros.core.geometry.relative_pose import PoseEstimate, estimate_essential, relative_pose
from vpr_ros.core.geometry.keyframe_geometry import keyframe_geometry
from vpr_ros.core.types import KeyframeGeometry
from vpr_ros.core.matching.verification import mnn_pairs
from vpr_ros.io.poses import pose_matrix

__all__ = ["add_arguments", "run_geometry_bench", "EUROC_DIR", "load_euroc", "rotation_error_deg",
           "direction_error_deg", "warp_by_rotation", "WARP_ROTATIONS_DEG"]

EUROC_DIR = Path(__file__).resolve().parents[3] / "test" / "data" / "kimera_euroc"
# (rotation about x, y, z) in degrees of the pure-rotation warps
WARP_ROTATIONS_DEG = ((0, 5, 0), (4, 0, 0), (0, 0, 8), (3, -6, 2), (-5, 3, -4), (2, 8, 0))
PAIRS = (("left_img_1", "left_img_0"), ("left_img_3", "left_img_2"))  # (query, match)


def load_euroc(directory: Path = EUROC_DIR) -> dict[str, Any]:
    """Images (RGB), ground-truth world_T_body poses, the left camera and the stereo rig."""
    def rgb(name: str) -> npt.NDArray[np.uint8]:
        grey = cv2.imread(str(directory / f"{name}.png"), cv2.IMREAD_GRAYSCALE)
        if grey is None:
            raise FileNotFoundError(f"missing {directory / name}.png")
        return cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB)
    with open(directory / "gt_poses.csv") as f:
        gt = {r["image"][:-4]: pose_matrix((float(r["x"]), float(r["y"]), float(r["z"])),
                                           (float(r["qx"]), float(r["qy"]), float(r["qz"]), float(r["qw"])))
              for r in csv.DictReader(f)}
    left, right = load_camera(directory / "sensorLeft.yaml"), load_camera(directory / "sensorRight.yaml")
    images = {f"{side}_img_{i}": rgb(f"{side}_img_{i}") for side in ("left", "right") for i in range(4)}
    return {"images": images, "gt": gt, "left": left, "rig": stereo_from_extrinsics(left, right)}


def direction_error_deg(t_a: npt.ArrayLike, t_b: npt.ArrayLike) -> float:
    a, b = np.asarray(t_a, float), np.asarray(t_b, float)
    return float(np.degrees(np.arccos(np.clip(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)), -1, 1))))


def warp_by_rotation(image: npt.NDArray[np.uint8], K: npt.ArrayLike, rot_deg: tuple[float, float, float],
                     ) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.float64]]:
    """The image a camera rotated by R would see (H = K R K^-1), and T_match_query = [R^T | 0]."""
    K = np.asarray(K, np.float64)
    R = cv2.Rodrigues(np.radians(np.asarray(rot_deg, np.float64)))[0]
    H = K @ R @ np.linalg.inv(K)
    warped = cv2.warpPerspective(image, H, (image.shape[1], image.shape[0]), flags=cv2.INTER_LINEAR)
    T = np.eye(4)
    T[:3, :3] = R.T
    return warped, T


def _cell_centre_essential(q: KeyframeGeometry, m: KeyframeGeometry, cells0: npt.NDArray[np.int64],
                           cells1: npt.NDArray[np.int64], grid: tuple[int, int], cfg: GeometryConfig) -> PoseEstimate:
    """The unrefined baseline: MNN cell centres as correspondences."""
    pq = grid_layout(q.image_hw, grid).cell_centres(cells0)
    pm = grid_layout(m.image_hw, grid).cell_centres(cells1)
    return estimate_essential(pm, pq, m, q, dataclasses.replace(cfg, ransac_threshold_px=8.0))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repeats", type=int, default=30, help="timed candidates per map size")
    parser.add_argument("--data", default=str(EUROC_DIR), help="folder of the EuRoC sample pairs")
    add_rendered_arguments(parser)


def _normalise(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _time(fn: Any, repeats: int) -> dict[str, float]:
    fn()  # warm-up
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    return latency_stats({"x": samples})["x"]


def _timing_section(model: Any, data: dict[str, Any], repeats: int) -> None:
    images = data["images"]
    cfg = GeometryConfig()
    imq, imm = images["left_img_1"], images["left_img_0"]
    gq = keyframe_geometry(imq, data["left"], cfg, right=images["right_img_1"], stereo=data["rig"])
    gm = keyframe_geometry(imm, data["left"], cfg, right=images["right_img_0"], stereo=data["rig"])
    kp_stats = _time(lambda: keyframe_geometry(imq, data["left"], cfg, right=images["right_img_1"],
                                               stereo=data["rig"]), max(3, repeats // 5))
    real = model.extract([imq, imm]).local
    rng = np.random.default_rng(0)
    maps = {"lite0-gem 20x20x112 (real)": (real[0], real[1])}
    sel = rng.normal(size=(2, 61, 61, 128)).astype(np.float32)
    maps["SelaVPR 61x61x128 random"] = tuple(_normalise(sel))
    # Random maps pair almost no cells like a real loop does; a SelaVPR-size map with the real
    # pair's structure: lite0's real maps upsampled to 61x61, padded to 128 channels with noise.
    up = [np.concatenate([cv2.resize(r, (61, 61), interpolation=cv2.INTER_LINEAR)
                          .reshape(61, 61, -1)[:, :, :112], 0.05 * rng.normal(size=(61, 61, 16))], axis=2)
          for r in real]
    maps["SelaVPR 61x61x128 real-like"] = tuple(_normalise(np.stack(up).astype(np.float32)))
    print(f"per-candidate time, ms (p50 / p95 / mean over {repeats}; the three steps interleaved per repeat "
          f"so machine load hits all alike), {platform.processor() or platform.machine()}")
    print(f"{'local map':<28}{'MNN pairs':>10}  {'MNN alone':>22}  {'MNN+refine+PnP':>22}  {'MNN+refine+essential':>22}")
    for name, (l0, l1) in maps.items():
        grid = l0.shape[:2]
        lay_q, lay_m = grid_layout(gq.image_hw, grid), grid_layout(gm.image_hw, grid)
        samples: dict[str, list[float]] = {"mnn": [], "pnp": [], "essential": []}
        for i in range(repeats + 1):  # the first round is a warm-up
            t0 = time.perf_counter()
            c0, c1 = mnn_pairs(l0, l1)
            t1 = time.perf_counter()
            relative_pose(gq, gm, lay_q, lay_m, c0, c1, dataclasses.replace(cfg, method="pnp"))
            t2 = time.perf_counter()
            relative_pose(gq, gm, lay_q, lay_m, c0, c1, dataclasses.replace(cfg, method="essential"))
            t3 = time.perf_counter()
            if i:
                samples["mnn"].append((t1 - t0) * 1e3)
                samples["pnp"].append((t2 - t0) * 1e3)
                samples["essential"].append((t1 - t0 + t3 - t2) * 1e3)
        stats = latency_stats(samples)
        text = [f"{stats[k]['p50']:.2f} / {stats[k]['p95']:.2f} / {stats[k]['mean']:.2f}"
                for k in ("mnn", "pnp", "essential")]
        print(f"{name:<28}{len(c0):>10}  {text[0]:>22}  {text[1]:>22}  {text[2]:>22}")
    print(f"per keyframe (once, not per candidate): SIFT keypoints + stereo points {kp_stats['p50']:.1f} ms p50")


def _accuracy_section(model: Any, data: dict[str, Any]) -> None:
    images, gt, left = data["images"], data["gt"], data["left"]
    print("\nEuRoC V1_01 revisit pairs vs ground truth (rotation deg, translation m / direction deg, inliers)")
    print(f"{'refinement':<12}{'pair':<8}{'PnP rot':>9}{'PnP t(m)':>10}{'inl':>6}{'E rot':>8}{'E dir':>8}{'inl':>6}")
    for kind in ("cells", "orb", "sift"):
        cfg = GeometryConfig(keypoints="orb" if kind == "orb" else "sift")
        for q, m in PAIRS:
            local = model.extract([images[q], images[m]]).local
            c0, c1 = mnn_pairs(local[0], local[1])
            grid = local.shape[1:3]
            gq = keyframe_geometry(images[q], left, cfg, right=images[q.replace("left", "right")], stereo=data["rig"])
            gm = keyframe_geometry(images[m], left, cfg, right=images[m.replace("left", "right")], stereo=data["rig"])
            truth = np.linalg.inv(gt[m]) @ gt[q]
            lay_q, lay_m = grid_layout(gq.image_hw, grid), grid_layout(gm.image_hw, grid)
            if kind == "cells":
                pnp_text = f"{'n/a':>9}{'n/a':>10}{'':>6}"
                ess = _cell_centre_essential(gq, gm, c0, c1, grid, cfg)
            else:
                pnp = relative_pose(gq, gm, lay_q, lay_m, c0, c1, dataclasses.replace(cfg, method="pnp"))
                pnp_text = (f"{rotation_error_deg(pnp.T_match_query, truth):>9.2f}"
                            f"{np.linalg.norm(pnp.T_match_query[:3, 3] - truth[:3, 3]):>10.3f}{pnp.inliers:>6}")
                ess = relative_pose(gq, gm, lay_q, lay_m, c0, c1, dataclasses.replace(cfg, method="essential"))
            if ess.T_match_query is None:
                ess_text = f"{'fail':>8}{'':>8}{ess.inliers:>6}"
            else:
                ess_text = (f"{rotation_error_deg(ess.T_match_query, truth):>8.2f}"
                            f"{direction_error_deg(ess.T_match_query[:3, 3], truth[:3, 3]):>8.1f}{ess.inliers:>6}")
            print(f"{kind:<12}{q[-1] + '-' + m[-1]:<8}{pnp_text}{ess_text}")
    print("\nPure-rotation warps of left_img_0/2 (H = K R K^-1, 6 rotations each): rotation error deg")
    pinhole = PinholeCamera(left.K, np.zeros(0), left.width, left.height)
    for kind in ("cells", "orb", "sift"):
        cfg = GeometryConfig(keypoints="orb" if kind == "orb" else "sift")
        errors = []
        for base in ("left_img_0", "left_img_2"):
            for rot in WARP_ROTATIONS_DEG:
                warped, truth = warp_by_rotation(images[base], left.K, rot)
                local = model.extract([warped, images[base]]).local
                c0, c1 = mnn_pairs(local[0], local[1])
                grid = local.shape[1:3]
                gq = keyframe_geometry(warped, pinhole, cfg)
                gm = keyframe_geometry(images[base], pinhole, cfg)
                if kind == "cells":
                    est = _cell_centre_essential(gq, gm, c0, c1, grid, cfg)
                else:
                    lay = grid_layout(gq.image_hw, grid)
                    est = relative_pose(gq, gm, lay, lay, c0, c1, dataclasses.replace(cfg, method="essential"))
                errors.append(np.nan if est.T_match_query is None else rotation_error_deg(est.T_match_query, truth))
        e = np.array(errors)
        failed = int(np.isnan(e).sum())
        print(f"{kind:<12} median {np.nanmedian(e):.3f}  max {np.nanmax(e):.3f}  failed {failed}/{len(e)}")


def run_geometry_bench(args: argparse.Namespace) -> int:
    if getattr(args, "rendered", False):  # SIMULATED rooms through vpr-ros replay (geometry_rendered.py)
        return run_rendered_bench(args)
    from vpr_ros.models import load_model  # torch is imported only when the bench runs

    cv2.setNumThreads(1)
    model = load_model("lite0-gem", backend="torch")
    data = load_euroc(Path(args.data))
    print(f"geometry bench, model {model.model_id}, OpenCV {cv2.__version__}")
    _timing_section(model, data, args.repeats)
    _accuracy_section(model, data)
    print_euroc_consistency(model, data)
    return 0
