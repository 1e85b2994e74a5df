"""``vpr-ros bench relocalization``: kidnapped-robot starts in a saved map, through ``vpr-ros replay``.

Data (``cli/kidnapped_scenes.py``, ``cli/kidnapped_bags.py``): SIMULATED (RENDERED from real
photographs) rooms and corridors with exact poses and depth. One mapping session (exact odometry:
its odom frame, hence the saved map's frame, is the scenes' map frame) is replayed with
``--map-save``; every kidnapped session (odometry starting at identity) is replayed with
``--map-load`` and ``--gt-poses`` (its true base poses in the map frame), mode continuous, RGB-D,
``frames.base_from_camera`` the camera's mounting. Starts in look-alike places (never mapped) must
give no fix. Then the EuRoC V1_01 stereo frames (real images): a map of the two ``match`` frames
and each ``query`` frame as a one-frame kidnapped start.

Each start is replayed against two copies of the map that differ only in the covariance of their
keyframe poses: ``odometry`` (as saved: the odometry-drift model of core/map/map_poses.py) and
``exact`` (the true poses stored as optimised poses with 0.1 mm / 0.006 deg: the map frame's truth,
so the NEES measures the relocaliser's own covariance). Everything else is the same.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from vpr_ros.cli.bench.machine import machine_base
from vpr_ros.cli.bench.relocalization_summary import GOALS_TEXT, print_summary, start_row, summarise
from vpr_ros.cli.frame_index import load_frame_index
from vpr_ros.cli.kidnapped_bags import (DEPTH_TOPIC, IMAGE_TOPIC, NS, ODOM_TOPIC, RIGHT_TOPIC, euroc_bags,
                                        write_camera_yaml, write_session_bag, write_tum)
from vpr_ros.cli.kidnapped_scenes import (BASE_FROM_CAMERA, KIDNAPPED_LABEL, Session, kidnapped_sessions,
                                          mapping_session, simulated_places)
from vpr_ros.cli.rendered_scenes import TEST_DATA_DIR, simulated_camera
from vpr_ros.core.errors import ConfigError
from vpr_ros.core.map.map_poses import MapPose, write_optimized_poses
from vpr_ros.io.poses import matrix_to_pose

__all__ = ["add_arguments", "run_relocalization_bench", "build_scenes", "replay_start", "MAP_VARIANTS",
           "EXACT_SIGMAS"]

T0_NS = 1_700_000_000 * NS
MAP_VARIANTS = ("odometry", "exact")
EXACT_SIGMAS = (1e-4, 1e-4)  # m, rad (0.1 mm, 0.006 deg): the true map poses
GT_RADIUS_M = 1.0
EUROC_DIR = TEST_DATA_DIR / "kimera_euroc"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rooms", type=int, default=4, help="mapped rooms")
    p.add_argument("--corridors", type=int, default=2, help="mapped corridors")
    p.add_argument("--starts", type=int, default=50, help="kidnapped starts in mapped places")
    p.add_argument("--look-alike-starts", type=int, default=10, help="starts in look-alike places (never mapped)")
    p.add_argument("--look-alike-places", type=int, default=3, help="look-alike places (of the first mapped ones)")
    p.add_argument("--frames", type=int, default=5, help="frames (all keyframes) per kidnapped session")
    p.add_argument("--width", type=int, default=640, help="image width (height 3/4 of it)")
    p.add_argument("--seed", type=int, default=21, help="seed of places, paths and degradations")
    p.add_argument("--variants", default=",".join(MAP_VARIANTS),
                   help="map covariances to replay against, comma separated: odometry, exact")
    p.add_argument("--shared-photographs", action="store_true",
                   help="show every place's photographs as they are (places then partly look alike), instead of "
                        "each place in its own turned/mirrored variant")
    p.add_argument("--no-euroc", action="store_true", help="skip the EuRoC stereo starts")
    p.add_argument("--only-euroc", action="store_true", help="only the EuRoC stereo starts (no rendering)")
    p.add_argument("--out", help="folder for bags, maps, replay outputs and relocalization.json "
                                 "(default: a temporary folder); existing bags in it are reused")


def _base_from_camera_text(T: np.ndarray) -> str:
    (x, y, z), q = matrix_to_pose(T)
    return "'" + " ".join(f"{v:.12g}" for v in (x, y, z, *q)) + "'"


def build_scenes(args: argparse.Namespace, work: Path) -> tuple[Session, list[Session], Path]:
    """Render (once; reused from ``work`` when made with the same settings) the mapping bag and every
    kidnapped bag with its TUM truth."""
    scene = {k: getattr(args, k) for k in ("rooms", "corridors", "starts", "look_alike_starts", "look_alike_places",
                                           "frames", "width", "seed", "shared_photographs")}
    stamp = work / "scenes.json"
    if stamp.exists() and json.loads(stamp.read_text()) != scene:
        raise ConfigError(f"--out {work} holds scenes made with other settings ({stamp}); give another --out")
    stamp.write_text(json.dumps(scene))
    cam = simulated_camera(args.width, args.width * 3 // 4)
    write_camera_yaml(work / "camera.yaml", cam)
    mapped, looks = simulated_places(args.rooms, args.corridors, args.look_alike_places, args.seed,
                                     distinct=not args.shared_photographs)
    mapping = mapping_session(mapped)
    starts = kidnapped_sessions(mapped, looks, args.starts, args.look_alike_starts, args.frames, args.seed + 1)
    if not (work / "mapping").exists():
        stamps, truth = write_session_bag(work / "mapping", mapping, cam, T0_NS, args.seed, exact_odometry_frame=True)
        write_tum(work / "mapping.tum", stamps, truth, f"{KIDNAPPED_LABEL}: mapping session, T_map_base")
    for k, s in enumerate(starts):
        if not (work / s.name).exists():
            stamps, truth = write_session_bag(work / s.name, s, cam, T0_NS + (100_000 + 1000 * k) * NS,
                                              args.seed * 1000 + k)
            write_tum(work / f"{s.name}.tum", stamps, truth, f"{KIDNAPPED_LABEL}: kidnapped session, T_map_base")
    return mapping, starts, work / "camera.yaml"


def _main(argv: list[str]) -> None:
    from vpr_ros.cli.main import main  # the user's command line, in this process

    with contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    if code != 0:
        raise RuntimeError(f"vpr-ros {' '.join(argv)} exited with {code}")


def _exact_map(map_dir: Path, truth_tum: Path, out: Path) -> Path:
    """A copy of the saved map whose optimised poses are the true poses (EXACT_SIGMAS)."""
    from vpr_ros.io.pose_files import read_pose_file

    truth = read_pose_file(truth_tum).poses
    cov = np.diag([EXACT_SIGMAS[0] ** 2] * 3 + [EXACT_SIGMAS[1] ** 2] * 3)
    poses = {key: MapPose(truth[i], cov, "optimized") for key, i in load_frame_index(map_dir).items()}
    return write_optimized_poses(map_dir, poses, out=out,
                                 source_note=f"{KIDNAPPED_LABEL}: the renderer's exact poses (bench relocalization)")


def replay_start(bag: Path, map_dir: Path, gt: Path, out: Path, inputs: list[str], session: str,
                 extra: list[str] | None = None) -> dict[str, Any]:
    """``vpr-ros replay`` of one kidnapped bag against ``map_dir``; metrics.json's relocalisation
    section plus the fixes of global_poses.csv (``rows``)."""
    if not (out / "metrics.json").exists():
        _main(["replay", str(bag), *inputs, "--map-load", str(map_dir), "--set", f"detector.session_id={session}",
               "--gt-poses", str(gt), "--gt-radius-m", str(GT_RADIUS_M), "--no-progress",
               "--data-label", KIDNAPPED_LABEL if not session.startswith("euroc") else "", *(extra or []),
               "--out", str(out)])
    section = json.loads((out / "metrics.json").read_text())["relocalization"]
    section["rows"] = list(csv.DictReader(open(out / "global_poses.csv")))
    return section


def _rendered_inputs(camera_yaml: Path) -> list[str]:
    """Replay inputs of the rendered bags (mapping and starts); their depth is exact, so no RGB-D noise."""
    return ["--image-topic", IMAGE_TOPIC, "--camera-info", str(camera_yaml), "--depth-topic", DEPTH_TOPIC,
            "--odom-topic", ODOM_TOPIC, "--set", f"frames.base_from_camera={_base_from_camera_text(BASE_FROM_CAMERA)}",
            "--set", "geometry.depth_sigma_coeff=0"]


def _euroc(work: Path, variants: list[str]) -> dict[str, list[dict[str, Any]]]:
    """The EuRoC stereo starts (real images): each variant's rows."""
    from vpr_ros.core.geometry.camera import load_camera

    T_BS = load_camera(EUROC_DIR / "sensorLeft.yaml").T_body_cam
    inputs = ["--image-topic", IMAGE_TOPIC, "--camera-info", str(EUROC_DIR / "sensorLeft.yaml"),
              "--right-image-topic", RIGHT_TOPIC, "--right-camera-info", str(EUROC_DIR / "sensorRight.yaml"),
              "--odom-topic", ODOM_TOPIC, "--set", f"frames.base_from_camera={_base_from_camera_text(T_BS)}"]
    map_bag, starts = euroc_bags(EUROC_DIR, work / "euroc", T0_NS)
    maps = work / "euroc" / "map_odometry"
    if not maps.exists():
        _main(["replay", str(map_bag), *inputs, "--no-progress", "--map-save", str(maps),
               "--out", str(work / "euroc" / "map_out")])
    rows: dict[str, list[dict[str, Any]]] = {}
    for v in variants:
        map_dir = maps if v == "odometry" else work / "euroc" / "map_exact"
        if v == "exact" and not map_dir.exists():
            _exact_map(maps, work / "euroc" / "euroc_map.tum", map_dir)
        rows[v] = [start_row(s.name, True, replay_start(s.bag, map_dir, s.gt, work / "euroc" / f"{s.name}_{v}_out",
                                                        inputs, s.name)) for s in starts]
    return rows


def run_relocalization_bench(args: argparse.Namespace) -> int:
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if not variants or any(v not in MAP_VARIANTS for v in variants):
        raise ConfigError(f"--variants {args.variants!r}: choose from {', '.join(MAP_VARIANTS)}")
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        work = Path(args.out) if args.out else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        work.mkdir(parents=True, exist_ok=True)
        if args.only_euroc:
            euroc = _euroc(work, variants)
            print(json.dumps({"euroc": euroc}, default=float))
            return 0
        print(f"{KIDNAPPED_LABEL}: rendering {args.rooms} rooms, {args.corridors} corridors, {args.starts} + "
              f"{args.look_alike_starts} look-alike starts into {work}", flush=True)
        mapping, starts, camera_yaml = build_scenes(args, work)
        inputs = _rendered_inputs(camera_yaml)
        maps = {"odometry": work / "map_odometry", "exact": work / "map_exact"}
        if not maps["odometry"].exists():
            _main(["replay", str(work / "mapping"), *inputs, "--no-progress", "--map-save", str(maps["odometry"]),
                   "--out", str(work / "mapping_out")])
        if "exact" in variants and not maps["exact"].exists():
            _exact_map(maps["odometry"], work / "mapping.tum", maps["exact"])
        rows: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
        for k, s in enumerate(starts):
            for v in variants:
                section = replay_start(work / s.name, maps[v], work / f"{s.name}.tum", work / f"{s.name}_{v}_out",
                                       inputs, s.name)
                rows[v].append(start_row(s.name, s.mapped, section))
            print(f"  {k + 1}/{len(starts)} {s.name}: " + ", ".join(
                f"{v} {rows[v][-1]['fixes']} fixes" for v in variants), flush=True)
        euroc = {} if args.no_euroc else _euroc(work, variants)
        results = {v: summarise(rows[v], euroc.get(v, [])) for v in variants}
        minutes = (time.monotonic() - started) / 60
        print_summary(results, args, minutes)
        report = {"label": KIDNAPPED_LABEL, "goals": GOALS_TEXT, "results": results,
                  "settings": {k: v for k, v in vars(args).items() if k != "func"},
                  "machine": machine_base(), "minutes": round(minutes, 1),
                  "mapping_keyframes": len(mapping.T_place_cam)}
        if args.out:
            (work / "relocalization.json").write_text(json.dumps(report | {"starts": rows, "euroc": euroc},
                                                                 indent=1, default=float))
        print(json.dumps(report, default=float))
    return 0
