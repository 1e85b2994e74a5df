"""``vpr-ros bench geometry --rendered``: pose errors and NEES of loops through the user's path, on
SIMULATED (RENDERED from real photographs) rooms with exact poses and depth.

Per room: map views then query views (known 6-DoF offsets, a few strongly blurred) are rendered
(``cli/rendered_scenes.py``) and written as rosbag2 (MCAP): rgb8 images + CameraInfo (+ 32FC1
depth for RGB-D; the single-camera bag has no depth). ``vpr-ros replay`` (``cli.main``, default
model lite0-gem, ``geometry.method`` auto) replays each; its LoopClosure MCAP bag is read back with
rosbags' reader and the definition embedded in the bag, and every loop is compared with the exact
ground truth (``pose_consistency.py``): errors, NEES (6 DoF metric, 5 DoF single camera), share
inside the 95 % bound, and the validity of look-alike pairs (a room vs the same photographs
rearranged: no rigid relation, any valid pose is wrong). ``--compare`` replays each bag twice, with
the issue 19 estimator (``BEFORE_SETTINGS``) and with today's defaults, and reports both.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from vpr_ros.cli.bench.pose_consistency import (direction_error_deg, nees_5, nees_6, nees_summary,
                                                rotation_error_deg)
from vpr_ros.cli.rendered_rooms import RENDERED_LABEL, RenderCamera, RenderedView
from vpr_ros.cli.rendered_scenes import (RenderedPair, relative_truth, render_pair, simulated_camera,
                                         simulated_look_alike_room, simulated_pairs, simulated_room)
from vpr_ros.io.bag_writer import camera_info_message, header_message
from vpr_ros.io.msgdefs import typestore
from vpr_ros.io.poses import pose_matrix

__all__ = ["add_rendered_arguments", "run_rendered_bench", "rendered_set", "write_rendered_bag",
           "replay_rendered", "read_loop_closures", "measure", "summarise"]

NS = 10**9
T0_NS = 1_700_000_000 * NS
QUERY_START_S = 100  # queries start 100 s after the map views (beyond the 20 s exclusion window)
IMAGE_TOPIC, INFO_TOPIC, DEPTH_TOPIC = "/camera/image_raw", "/camera/camera_info", "/camera/depth/image_raw"
# Each query is one keyframe: no k-in-a-row. The rendered depth is exact: no RGB-D depth noise in the
# PnP covariance (geometry.depth_sigma_coeff, a real sensor's by default).
REPLAY_SETTINGS = ["--set", "verify.temporal_consistency=1", "--set", "geometry.depth_sigma_coeff=0"]
LARGE_METRIC = (1.0, 0.05)  # deg, m: a valid metric pose worse than this is a large error
LARGE_SINGLE = (3.0, 15.0)  # rotation deg, direction deg (the goals)
BEFORE_LABEL, NOW_LABEL = "before (issue 19 estimator)", "now"
BEFORE_SETTINGS = ["--set", "geometry.covariance_model=iid", "--set", "geometry.refine_essential=false",
                   "--set", "geometry.min_inlier_extent=0", "--set", "geometry.max_unexplained_share=1"]


def add_rendered_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("--rendered: SIMULATED rooms rendered from real photographs")
    g.add_argument("--rendered", action="store_true", help="measure pose errors and NEES through "
                   "vpr-ros replay on rendered rooms with exact ground truth (instead of the EuRoC bench)")
    g.add_argument("--rooms", type=int, default=6, help="rooms (one pair of bags each)")
    g.add_argument("--pairs-per-room", type=int, default=8, help="map/query pairs per room (<= 18)")
    g.add_argument("--blurred-per-room", type=int, default=1, help="of those, strongly blurred queries")
    g.add_argument("--look-alike-pairs", type=int, default=6, help="pairs room vs look-alike room")
    g.add_argument("--seed", type=int, default=20, help="seed of rooms, poses and degradations")
    g.add_argument("--width", type=int, default=640, help="rendered image width (height = 3/4 of it)")
    g.add_argument("--compare", action="store_true", help="replay each bag twice, with the issue 19 "
                   "estimator (geometry.covariance_model=iid, geometry.refine_essential=false, "
                   "geometry.min_inlier_extent=0, geometry.max_unexplained_share=1) and with the defaults, "
                   "and report both")
    g.add_argument("--out", help="folder for the bags, replay outputs and rendered_geometry.json "
                                 "(default: a temporary folder)")


def rendered_set(rooms: int, pairs_per_room: int, blurred_per_room: int, look_alike_pairs: int, seed: int,
                 width: int = 640) -> list[tuple[str, RenderCamera, list[RenderedPair]]]:
    """Groups (one bag each): name, camera (every other room with radial distortion), pairs."""
    groups = []
    for r in range(rooms):
        cam = simulated_camera(width, width * 3 // 4, distorted=r % 2 == 1)
        room = simulated_room(seed + r, f"room{r}")
        groups.append((room.name, cam, simulated_pairs(room, cam, pairs_per_room, seed * 100 + r,
                                                       blurred=blurred_per_room)))
    rooms_la = max(1, math.ceil(look_alike_pairs / 3)) if look_alike_pairs else 0
    for k in range(rooms_la):
        cam = simulated_camera(width, width * 3 // 4)
        room = simulated_room(seed + rooms + k, f"lookalike{k}")
        other = simulated_look_alike_room(room, seed + 1000 + k)
        n = min(3, look_alike_pairs - 3 * k)
        groups.append((room.name, cam, simulated_pairs(room, cam, n, seed * 100 + 50 + k, look_alike=other,
                                                       t_range=(0.05, 0.4), r_range=(1.0, 8.0))))
    return groups


def _image(stamp_ns: int, array: np.ndarray, encoding: str) -> Any:
    return typestore().types["sensor_msgs/msg/Image"](
        header=header_message(stamp_ns, "camera"), height=array.shape[0], width=array.shape[1], encoding=encoding,
        is_bigendian=0, step=array.shape[1] * array[0, 0].nbytes,
        data=np.frombuffer(np.ascontiguousarray(array).tobytes(), np.uint8))


def write_rendered_bag(path: Path, views: list[tuple[int, RenderedView]], depth: bool) -> Path:
    """rosbag2 (MCAP): rgb8 images, CameraInfo, and (``depth``) 32FC1 depth in metres, one of each per view."""
    store = typestore()
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conns = {IMAGE_TOPIC: writer.add_connection(IMAGE_TOPIC, "sensor_msgs/msg/Image", typestore=store),
                 INFO_TOPIC: writer.add_connection(INFO_TOPIC, "sensor_msgs/msg/CameraInfo", typestore=store)}
        if depth:
            conns[DEPTH_TOPIC] = writer.add_connection(DEPTH_TOPIC, "sensor_msgs/msg/Image", typestore=store)
        for stamp, view in views:
            cam = view.camera
            msgs = [(INFO_TOPIC, "sensor_msgs/msg/CameraInfo",
                     camera_info_message(stamp, "camera", cam.K, cam.D, cam.width, cam.height)),
                    (IMAGE_TOPIC, "sensor_msgs/msg/Image", _image(stamp, view.image, "rgb8"))]
            if depth:
                msgs.append((DEPTH_TOPIC, "sensor_msgs/msg/Image", _image(stamp, view.depth, "32FC1")))
            for topic, msgtype, msg in msgs:
                writer.write(conns[topic], stamp, store.serialize_cdr(msg, msgtype))
    return path


def replay_rendered(bag: Path, out: Path, depth: bool, settings: list[str] | None = None) -> None:
    """``vpr-ros replay`` on a rendered bag (default model, geometry auto, then ``settings``), output in
    ``out``."""
    from vpr_ros.cli.main import main  # the user's command line, in this process

    args = ["replay", str(bag), "--image-topic", IMAGE_TOPIC, "--camera-info-topic", INFO_TOPIC,
            *(["--depth-topic", DEPTH_TOPIC] if depth else []), "--no-progress", *REPLAY_SETTINGS, *(settings or []),
            "--out", str(out)]
    with contextlib.redirect_stdout(io.StringIO()):
        code = main(args)
    if code != 0:
        raise RuntimeError(f"vpr-ros {' '.join(args)} exited with {code}")


def read_loop_closures(out: Path) -> list[dict[str, Any]]:
    """Every LoopClosure of ``out/loop_closures`` (decoded with the bag's own definition) with the
    rejection reason from ``out/loop_closures.csv`` (the message has no such field)."""
    with AnyReader([out / "loop_closures"], default_typestore=get_typestore(Stores.EMPTY)) as reader:
        msgs = [reader.deserialize(raw, c.msgtype) for c, _, raw in reader.messages()]
    reasons = {(r["query_id"], r["match_id"]): r.get("geometry_rejection", "")
               for r in csv.DictReader(open(out / "loop_closures.csv"))}
    loops = []
    for m in msgs:
        p = m.relative_pose.pose
        loops.append({
            "query_ns": m.query_stamp.sec * NS + m.query_stamp.nanosec,
            "match_ns": m.match_stamp.sec * NS + m.match_stamp.nanosec,
            "valid": bool(m.relative_pose_valid), "metric": bool(m.translation_scale_known),
            "inliers": int(m.geometric_inliers),
            "pose": pose_matrix((p.position.x, p.position.y, p.position.z),
                                (p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w)),
            "covariance": np.asarray(m.relative_pose.covariance, np.float64).reshape(6, 6),
            "rejection": reasons.get((str(m.query_keyframe_id), str(m.match_keyframe_id)), "")})
    return loops


def measure(loop: dict[str, Any], truth: np.ndarray | None, kind: str) -> dict[str, Any]:
    """One loop against the exact truth (None: a look-alike pair, no rigid relation)."""
    row = {"kind": kind, "valid": loop["valid"], "metric": loop["metric"], "inliers": loop["inliers"],
           "rejection": loop["rejection"]}
    if not loop["valid"]:
        return row
    T, C = loop["pose"], loop["covariance"]
    row["sigma_rot_deg"] = float(np.degrees(np.sqrt(np.trace(C[3:, 3:]) / 3)))
    if truth is None:  # a look-alike: what the invalid-by-construction pose claims
        row["claimed_rot_deg"] = rotation_error_deg(T, np.eye(4))
        return row
    row["rot_err_deg"] = rotation_error_deg(T, truth)
    if loop["metric"]:
        row["trans_err_m"] = float(np.linalg.norm(T[:3, 3] - truth[:3, 3]))
        row["nees"] = nees_6(T, truth, C)
    else:
        row["dir_err_deg"] = direction_error_deg(T, truth)
        row["nees"] = nees_5(T, truth, C)
    return row


def _median(rows: list[dict[str, Any]], key: str) -> float | None:
    v = [r[key] for r in rows if key in r]
    return float(np.median(v)) if v else None


def summarise(rows: list[dict[str, Any]], queries: int, metric: bool) -> dict[str, Any]:
    """Counts, median errors, NEES statistics, large errors, blurred and look-alike validity."""
    real = [r for r in rows if r["kind"] != "look-alike"]
    valid = [r for r in real if r["valid"]]
    dof = 6 if metric else 5
    if metric:
        large = [r for r in valid if r["rot_err_deg"] > LARGE_METRIC[0] or r["trans_err_m"] > LARGE_METRIC[1]]
    else:
        large = [r for r in valid if r["rot_err_deg"] > LARGE_SINGLE[0] or r["dir_err_deg"] > LARGE_SINGLE[1]]
    blurred = [r for r in real if r["kind"] == "blurred"]
    looks = [r for r in rows if r["kind"] == "look-alike"]
    rejected: dict[str, int] = {}
    for r in real:
        if not r["valid"]:
            rejected[r["rejection"] or "?"] = rejected.get(r["rejection"] or "?", 0) + 1
    return {"queries": queries, "loops": len(real), "valid": len(valid), "rejected": rejected,
            "median_rot_err_deg": _median(valid, "rot_err_deg"),
            "median_trans_err_m": _median(valid, "trans_err_m"), "median_dir_err_deg": _median(valid, "dir_err_deg"),
            "median_sigma_rot_deg": _median(valid, "sigma_rot_deg"),
            "nees": nees_summary([r["nees"] for r in valid], dof), "large_errors": len(large),
            "blurred": {"loops": len(blurred), "valid": sum(r["valid"] for r in blurred),
                        "nees": [round(r["nees"], 1) for r in blurred if "nees" in r],
                        "rot_err_deg": [round(r["rot_err_deg"], 2) for r in blurred if "rot_err_deg" in r]},
            "look_alike": {"loops": len(looks), "valid": sum(r["valid"] for r in looks),
                           "valid_inliers": [r["inliers"] for r in looks if r["valid"]],
                           "valid_sigma_rot_deg": [round(r["sigma_rot_deg"], 3) for r in looks if r["valid"]]}}


def measure_group(name: str, cam: RenderCamera, pairs: list[RenderedPair], work: Path, seed: int,
                  settings: list[str] | None = None, tag: str = "") -> dict[str, list[dict[str, Any]]]:
    """Render and write both bags (RGB-D, single camera; once, kept in ``work`` for a second call),
    replay each with ``settings`` into ``{name}_{case}{tag}_out``, measure every loop."""
    frames: dict[int, tuple[str, np.ndarray, str]] = {}  # stamp -> (room, T_world_cam, kind)
    for i, pair in enumerate(pairs):
        frames[T0_NS + i * NS] = (pair.map_room.name, pair.T_world_map, pair.kind)
        frames[T0_NS + (QUERY_START_S + i) * NS] = (pair.query_room.name, pair.T_world_query, pair.kind)
    cases = (("rgbd", True), ("single", False))
    if not all((work / f"{name}_{case}").exists() for case, _ in cases):
        views: list[tuple[int, RenderedView]] = []
        queries: list[tuple[int, RenderedView]] = []
        for i, pair in enumerate(pairs):
            mv, qv = render_pair(pair, cam, seed + i)
            views.append((T0_NS + i * NS, mv))
            queries.append((T0_NS + (QUERY_START_S + i) * NS, qv))
        for case, depth in cases:
            write_rendered_bag(work / f"{name}_{case}", views + queries, depth)
    rows: dict[str, list[dict[str, Any]]] = {}
    for case, depth in cases:
        out = work / f"{name}_{case}{tag}_out"
        replay_rendered(work / f"{name}_{case}", out, depth, settings)
        rows[case] = []
        for loop in read_loop_closures(out):
            (room_q, T_q, kind), (room_m, T_m, _) = frames[loop["query_ns"]], frames[loop["match_ns"]]
            truth = relative_truth(T_m, T_q) if room_q == room_m else None
            rows[case].append({"group": name, **measure(loop, truth, kind if truth is not None else "look-alike")})
    return rows


def _fmt(x: Any, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def print_table(results: dict[str, dict[str, Any]]) -> None:
    print(f"{'':<34}{'metric (RGB-D)':>22}{'single camera':>22}")
    m, s = results["rgbd"], results["single"]
    lines = [("queries / loops / valid", f"{m['queries']} / {m['loops']} / {m['valid']}",
              f"{s['queries']} / {s['loops']} / {s['valid']}"),
             ("median rotation error, deg", _fmt(m["median_rot_err_deg"], ".3f"), _fmt(s["median_rot_err_deg"], ".3f")),
             ("median translation err m / dir deg", _fmt(m["median_trans_err_m"], ".4f"),
              _fmt(s["median_dir_err_deg"], ".2f")),
             ("median claimed sigma rot, deg", _fmt(m["median_sigma_rot_deg"], ".3f"),
              _fmt(s["median_sigma_rot_deg"], ".3f")),
             ("NEES mean (expected 6 / 5)", _fmt(m["nees"]["mean"], ".1f"), _fmt(s["nees"]["mean"], ".1f")),
             ("NEES median", _fmt(m["nees"]["median"], ".1f"), _fmt(s["nees"]["median"], ".1f")),
             ("inside the 95 % bound", _fmt(m["nees"]["inside_95"], ".0%"), _fmt(s["nees"]["inside_95"], ".0%")),
             ("valid with large errors", str(m["large_errors"]), str(s["large_errors"])),
             ("blurred: loops / valid", f"{m['blurred']['loops']} / {m['blurred']['valid']}",
              f"{s['blurred']['loops']} / {s['blurred']['valid']}"),
             ("look-alike: loops / valid", f"{m['look_alike']['loops']} / {m['look_alike']['valid']}",
              f"{s['look_alike']['loops']} / {s['look_alike']['valid']}")]
    for label, a, b in lines:
        print(f"{label:<34}{a:>22}{b:>22}")
    print(f"large errors: metric rotation > {LARGE_METRIC[0]} deg or translation > {LARGE_METRIC[1]} m; "
          f"single camera rotation > {LARGE_SINGLE[0]} deg or direction > {LARGE_SINGLE[1]} deg")


def run_rendered_bench(args: argparse.Namespace) -> int:
    """The table and JSON of one estimator, or with ``--compare`` of both: the JSON then has
    ``compare`` {BEFORE_LABEL: results, NOW_LABEL: results} (and the saved file their loops)."""
    groups = rendered_set(args.rooms, args.pairs_per_room, args.blurred_per_room, args.look_alike_pairs,
                          args.seed, args.width)
    variants = [(BEFORE_LABEL, BEFORE_SETTINGS, "_before"), (NOW_LABEL, [], "")] if getattr(
        args, "compare", False) else [(NOW_LABEL, [], "")]
    with contextlib.ExitStack() as stack:
        work = Path(args.out) if args.out else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        work.mkdir(parents=True, exist_ok=True)
        rows = {v: {"rgbd": [], "single": []} for v, _, _ in variants}
        counts = {"rgbd": 0, "single": 0}
        for k, (name, cam, pairs) in enumerate(groups):
            print(f"{RENDERED_LABEL}: {name}, {len(pairs)} pairs", flush=True)
            for v, settings, tag in variants:
                for case, r in measure_group(name, cam, pairs, work, args.seed * 1000 + 100 * k, settings,
                                             tag).items():
                    rows[v][case] += r
            for case in counts:
                counts[case] += sum(p.kind != "look-alike" for p in pairs)
        results = {v: {case: summarise(rows[v][case], counts[case], case == "rgbd") for case in counts}
                   for v in rows}
        for v, settings, _ in variants:
            label = f", {v}: {' '.join(settings[1::2]) or 'defaults'}" if len(variants) > 1 else ""
            print(f"\nrelative pose of loops through vpr-ros replay, {RENDERED_LABEL}{label}")
            print_table(results[v])
        if len(variants) > 1:
            short = {"label": RENDERED_LABEL, "compare": results}
            report = short | {"settings": vars(args) | {"func": None}, "loops": rows}
        else:
            short = {"label": RENDERED_LABEL, "results": results[NOW_LABEL]}
            report = short | {"settings": vars(args) | {"func": None}, "loops": rows[NOW_LABEL]}
        if args.out:
            (work / "rendered_geometry.json").write_text(json.dumps(report, indent=1, default=float))
        print(json.dumps(short, default=float))
    return 0
